"""``jwt_key_type = "rsa-2048"``: JWT-SVIDs are RS256 (what Azure accepts) while the X.509 CA stays EC.

The package's server runs with that setting, so every SDK test here also exchanges RS256 JWT-SVIDs.
"""

from __future__ import annotations

import base64
import json

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.ai.conftest import World


def test_rs256_jwt_svids_with_an_ec_x509_ca(world: World) -> None:
    token = world.server.cli_json("jwt", "mint", "--spiffe-id", "spiffe://example.org/azure", "--audience",
                                  "api://AzureADTokenExchange", "--ttl", "60")["token"]
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "RS256" and header["kid"]
    roots = x509.load_pem_x509_certificates(world.server.cli("bundle", "show", "--format", "pem").stdout.encode())
    assert roots and all(isinstance(c.public_key(), ec.EllipticCurvePublicKey) for c in roots)

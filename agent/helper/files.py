"""What the helper writes, as bytes (pure): PEM chain, PKCS#8 key, PEM bundle, JWT, JWT bundle JSON."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

from cryptography.hazmat.primitives import serialization

from spiffe_py.bundle import JwtBundle
from spiffe_py.spiffeid import TrustDomain
from spiffe_py.workloadapi import X509Context


def x509_files(ctx: X509Context, *, add_intermediates_to_bundle: bool = False) -> tuple[bytes, bytes, bytes]:
    """(certificate chain PEM, private key PEM, trust bundle PEM) of the default SVID."""
    svid = ctx.default_svid
    bundle = ctx.bundles.get_x509_bundle_for_trust_domain(svid.spiffe_id.trust_domain).to_pem()
    if add_intermediates_to_bundle:
        bundle += b"".join(c.public_bytes(serialization.Encoding.PEM) for c in svid.cert_chain[1:])
    return svid.chain_pem(), svid.key_pem(), bundle


def jwt_bundle_file(bundles: Mapping[TrustDomain, JwtBundle]) -> bytes:
    """spiffe-helper's JWT bundle file: ``{"<trust domain>": base64(JWKS)}``."""
    by_name = {td.name: base64.b64encode(b.to_jwks()).decode() for td, b in bundles.items()}
    return json.dumps(dict(sorted(by_name.items()))).encode()

"""A workload process for the --bind-to-process tests: fetch its SVIDs, report them, exit on stdin EOF.

Usage: ``python bound_workload.py <workload api address> <spiffe id> <audience>``. Prints one JSON
line (serial hex, SHA-256 of the public key, jti, token) and stays alive until stdin closes.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from spiffe_py.spiffeid import SpiffeId
from spiffe_py.workloadapi import WorkloadApiClient


def main() -> None:
    address, spiffe_id, audience = sys.argv[1], SpiffeId.parse(sys.argv[2]), sys.argv[3]
    with WorkloadApiClient(address, timeout=60) as client:
        svid = next(s for s in client.fetch_x509_context().svids if s.spiffe_id == spiffe_id)
        jwt = client.fetch_jwt_svid(audience, spiffe_id)
    leaf = svid.cert_chain[0]
    spki = leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    report = {"serial": f"{leaf.serial_number:x}", "key": hashlib.sha256(spki).hexdigest(),
              "jti": jwt.claims["jti"], "token": jwt.token}
    print(json.dumps(report), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()

"""Write the seed corpus of atheris_messages.py into tests/fuzz/corpus/<service>/ (run by hand, output committed).

    .venv/bin/python tests/fuzz/make_corpus.py
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from spiffe_py._proto import workload_pb2
from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, agent_pb2, types_pb2
from tests.fuzz import _targets
from tests.fuzz._fuzz import NOW
from tests.support.ca import CA

CORPUS = Path(__file__).resolve().parent / "corpus"


def _csr() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).add_extension(
        x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://example.org/web")]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def seeds() -> dict[str, list[object]]:
    ca = CA.create("example.org", now=NOW)
    node = ca.issue_svid("spiffe://example.org/node")
    csr = _csr()
    token = ca.sign_jwt({"sub": "spiffe://example.org/web", "aud": ["svc"], "exp": int(NOW.timestamp()) + 300})
    entry = types_pb2.Entry(spiffe_id="spiffe://example.org/web", parent_id="spiffe://example.org/spire/agent/x",
                            selectors=[types_pb2.Selector(type="unix", value="uid:1000")], x509_svid_ttl=3600,
                            dns_names=["web.example.org"], hint="web", labels={"team": "a"})
    bundle = types_pb2.Bundle(trust_domain="other.org",
                              x509_authorities=[ca.cert.public_bytes(serialization.Encoding.DER)])
    return {
        "workload": [workload_pb2.X509SVIDRequest(), workload_pb2.JWTSVIDRequest(audience=["svc"]),
                     workload_pb2.JWTSVIDRequest(audience=["a", "b"], spiffe_id="spiffe://example.org/web"),
                     workload_pb2.ValidateJWTSVIDRequest(audience="svc", svid=token)],
        "agent": [agent_pb2.AttestAgentRequest(params=agent_pb2.AttestParams(attestation_type="x509pop",
                                                                             payload=node.chain_der(), csr=csr)),
                  agent_pb2.AttestAgentRequest(params=agent_pb2.AttestParams(attestation_type="join_token",
                                                                             payload=b"0123abcd", csr=csr)),
                  agent_pb2.RenewAgentRequest(csr=csr),
                  agent_pb2.BatchNewX509SVIDRequest(params=[agent_pb2.NewX509SVIDParams(entry_id="e1", csr=csr)]),
                  agent_pb2.NewJWTSVIDRequest(entry_id="e1", audience=["svc"]),
                  agent_pb2.RevokeOwnRequest(x509_serials=["0x1f"], jwt_ids=["j1"], reason="rotated")],
        "admin": [admin_pb2.CreateEntryRequest(entry=entry), admin_pb2.SetFederatedBundleRequest(bundle=bundle),
                  admin_pb2.MintX509SVIDRequest(csr=csr, ttl=60),
                  admin_pb2.MintJWTSVIDRequest(spiffe_id="spiffe://example.org/web", audience=["svc"], ttl=60),
                  admin_pb2.ListEntriesRequest(selectors=[types_pb2.Selector(type="unix", value="uid:0")]),
                  admin_pb2.RevokeSvidRequest(x509_serial="1f", reason="key leaked")],
    }


def main() -> None:
    for service, messages in seeds().items():
        out = CORPUS / service
        out.mkdir(parents=True, exist_ok=True)
        for message in messages:
            data = _targets.corpus_entry(message)
            (out / hashlib.sha1(data).hexdigest()).write_bytes(data)


if __name__ == "__main__":
    main()

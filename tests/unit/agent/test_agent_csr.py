"""The agent's hand-assembled CSR (spiffe_agent.manager.identity.build_csr) against cryptography's builder.

ECDSA signatures are randomised, so the reference is the request info (what is signed): it must
be byte-identical to what ``CertificateSigningRequestBuilder`` encodes for the same key and ID,
and the whole CSR must load, verify and pass the server's CSR checks.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from spiffe_agent.manager.identity import build_csr
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_server.ca.signer import public_key_from_csr

KEYS = [ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1())]
_segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._", min_size=1, max_size=40).filter(
    lambda s: s not in (".", ".."))


def reference_csr(key: ec.EllipticCurvePrivateKey, spiffe_id: SpiffeId | None) -> x509.CertificateSigningRequest:
    """The plain version: cryptography's builder, as the agent built its CSRs before."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE")]))
    if spiffe_id is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(spiffe_id))]), critical=False)
    return builder.sign(key, hashes.SHA256())


@settings(max_examples=40, deadline=None)
@given(key=st.sampled_from(range(len(KEYS))), path=st.lists(_segment, min_size=1, max_size=6),
       domain=st.sampled_from(["example.org", "a.very-long.trust.domain.example", "td"]))
def test_request_info_is_byte_identical_to_the_builders(key: int, path: list[str], domain: str) -> None:
    sid = SpiffeId.from_segments(TrustDomain.parse(domain), *path)
    ours = x509.load_der_x509_csr(build_csr(KEYS[key], sid))
    assert ours.tbs_certrequest_bytes == reference_csr(KEYS[key], sid).tbs_certrequest_bytes
    assert ours.is_signature_valid
    assert ours.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.ECDSA_WITH_SHA256
    assert public_key_from_csr(build_csr(KEYS[key], sid), spiffe_id=sid) == KEYS[key].public_key()


def test_a_csr_without_an_id_has_no_extension_request() -> None:
    """The node attestation CSR: no SAN (the server names the agent)."""
    ours = x509.load_der_x509_csr(build_csr(KEYS[0]))
    assert ours.tbs_certrequest_bytes == reference_csr(KEYS[0], None).tbs_certrequest_bytes
    assert ours.is_signature_valid
    assert len(ours.extensions) == 0

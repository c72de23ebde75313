"""Certificate signing requests in the signing path (agent BatchNewX509SVID/RenewAgent, admin MintX509SVID)."""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from hypothesis import example, given
from hypothesis import strategies as st

from spiffe_py.spiffeid import SpiffeId
from spiffe_server.ca.signer import ParsedCsr, parse_csr, public_key_from_csr
from spiffe_server.errors import InvalidCsrError
from tests.fuzz import _der
from tests.fuzz._fuzz import COSTLY, MEDIUM, assert_outcome, attempt, mutate

SID = SpiffeId.parse("spiffe://example.org/web")
_KEY = ec.generate_private_key(ec.SECP256R1())
_OTHER_KEYS = [ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP521R1()),
               ed25519.Ed25519PrivateKey.generate()]
_IAN_OID = bytes.fromhex("0603551d12")  # issuerAltName: same length as subjectAltName's OID
_SAN_OID = bytes.fromhex("0603551d11")


def _csr(names: list[x509.GeneralName], *, key: object = _KEY, ian: bool = False, cn: str | None = None) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if ian:
        builder = builder.add_extension(x509.IssuerAlternativeName(names or [x509.DNSName("a")]), critical=False)
    hash_alg = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, hash_alg).public_bytes(serialization.Encoding.DER)  # type: ignore[arg-type]


_GOOD = _csr([x509.UniformResourceIdentifier(str(SID))])
_GOOD_TBS = x509.load_der_x509_csr(_GOOD).tbs_certrequest_bytes

_general_names = st.one_of(
    st.sampled_from([str(SID), "spiffe://example.org/other", "spiffe://EXAMPLE.org/web", "http://x", "spiffe://"])
    .map(x509.UniformResourceIdentifier),
    st.text(alphabet="abcdefghij.-*0123456789", min_size=1, max_size=20).map(x509.DNSName),
    st.just(x509.IPAddress(ipaddress.ip_address("127.0.0.1"))),
    st.just(x509.RFC822Name("a@b")),
)


@st.composite
def resigned_csrs(draw: st.DrawFn) -> bytes:
    """CSRs with a valid signature: built from odd SANs, then the TBS edited and signed again."""
    names = draw(st.lists(_general_names, max_size=3))
    der = _csr(names, key=draw(st.sampled_from([_KEY, _KEY, *_OTHER_KEYS])), ian=draw(st.booleans()),
               cn=draw(st.none() | st.text(alphabet="ab", min_size=1, max_size=3)))
    if draw(st.booleans()):
        return der
    tbs = x509.load_der_x509_csr(der).tbs_certrequest_bytes
    choice = draw(st.integers(0, 3))
    if choice == 0:  # two SAN extensions
        tbs = tbs.replace(_IAN_OID, _SAN_OID)
    elif choice == 1:  # a SAN general name of a type cryptography does not decode (x400Address, ediPartyName)
        tbs = tbs.replace(b"\x82", draw(st.sampled_from([b"\xa3", b"\xa5", b"\x83", b"\x88"])), 1)
    elif choice == 2:  # the version field
        at = tbs.find(b"\x02\x01\x00")
        tbs = tbs[: at + 2] + bytes([draw(st.integers(0, 255))]) + tbs[at + 3 :]
    else:
        tbs = mutate(tbs, draw)
    return _der.signed(tbs, _KEY)


@st.composite
def mutated_csrs(draw: st.DrawFn) -> bytes:
    return mutate(_GOOD, draw)


@COSTLY
@given(st.one_of(resigned_csrs(), mutated_csrs(), st.binary(max_size=200)))
# A CSR the caller signed itself with: two SAN extensions (DuplicateExtension), an x400Address
# SAN (UnsupportedGeneralNameType), version 1 (InvalidVersion); each escaped as a non-ValueError.
@example(_der.signed(x509.load_der_x509_csr(_csr([x509.DNSName("a")], ian=True)).tbs_certrequest_bytes
                     .replace(_IAN_OID, _SAN_OID), _KEY))
@example(_der.signed(x509.load_der_x509_csr(_csr([x509.DNSName("a")])).tbs_certrequest_bytes
                     .replace(b"\x82", b"\xa3", 1), _KEY))
@example(_der.signed(_GOOD_TBS.replace(b"\x02\x01\x00", b"\x02\x01\x01", 1), _KEY))
# A public key on an unknown curve OID: the signature check raised UnsupportedAlgorithm.
@example(_GOOD.replace(bytes.fromhex("2a8648ce3d030107"), bytes.fromhex("2b8648ce3d030107"), 1))
def test_parse_csr_raises_only_invalid_csr(der: bytes) -> None:
    assert_outcome(attempt(parse_csr, der), ParsedCsr, InvalidCsrError)
    assert_outcome(attempt(public_key_from_csr, der, spiffe_id=SID), object, InvalidCsrError)


@MEDIUM
@given(mutated_csrs())
def test_mutated_csr_bytes_raise_only_invalid_csr(der: bytes) -> None:
    assert_outcome(attempt(public_key_from_csr, der, spiffe_id=SID), object, InvalidCsrError)

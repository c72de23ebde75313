"""PEM/DER decoding, X509-SVID parsing and chain verification (Workload API responses, peer chains, files)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import example, given
from hypothesis import strategies as st

from spiffe_py import _pem
from spiffe_py.bundle import BundleSet
from spiffe_py.errors import BundleNotFoundError, InvalidX509SvidError, VerificationError
from spiffe_py.spiffeid import SpiffeId
from spiffe_py.x509svid import X509Svid, verify_x509_svid
from tests.fuzz import _der
from tests.fuzz._fuzz import CHEAP, COSTLY, MEDIUM, NOW, assert_outcome, attempt, mutate
from tests.support.ca import CA

_CA = CA.create("example.org", now=NOW)
_MID = _CA.child_ca()
_SVID = _MID.issue_svid("spiffe://example.org/web")
_CHAIN_PEM, _CHAIN_DER = _SVID.chain_pem(), _SVID.chain_der()
_KEY_PEM, _KEY_DER = _SVID.key_pem(), _SVID.key_der()
_BUNDLES = BundleSet.of(_CA.x509_bundle())
_LEAF_TBS = _SVID.leaf.tbs_certificate_bytes
_MID_KEY = _MID.key


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    return mutate(data, draw)


_pem_text = st.lists(
    st.sampled_from([b"-----BEGIN ", b"-----END ", b"CERTIFICATE", b"PRIVATE KEY", b"-----", b"\n", b"MIIB", b"=",
                     b" "]),
    max_size=12,
).map(b"".join)


def _bit_string_common_name(der: bytes) -> bytes:
    """``der`` with its first commonName made a BIT STRING (only X500UniqueIdentifier may be one)."""
    at = der.find(bytes.fromhex("0603550403")) + 5  # the CN OID, then the value's tag, length, first byte
    return der[:at] + bytes([0x03, der[at + 1], 0x00]) + der[at + 3 :]


# cryptography raised TypeError when the subject was first read (found by atheris).
_BIT_STRING_CN_CHAIN = _bit_string_common_name(_CHAIN_DER)


@CHEAP
@given(st.one_of(mutated(_CHAIN_PEM), mutated(_CHAIN_DER), _pem_text, st.binary(max_size=300)))
@example(_BIT_STRING_CN_CHAIN)
def test_certificates_from_any_raises_only_decode_error(data: bytes) -> None:
    outcome = attempt(_pem.certificates_from_any, data)
    assert_outcome(outcome, list, _pem.DecodeError)
    if isinstance(outcome, list):  # parsed certificates are fully decoded: later accessors cannot raise
        assert all(isinstance(c, x509.Certificate) for c in outcome)


@CHEAP
@given(st.one_of(mutated(_CHAIN_DER), st.binary(max_size=100)))
def test_split_der_raises_only_decode_error(data: bytes) -> None:
    outcome = attempt(_pem.split_der, data)
    assert_outcome(outcome, list, _pem.DecodeError)
    if isinstance(outcome, list):
        assert b"".join(outcome) == data


# A PKCS#8 key whose algorithm OID is unknown: cryptography raised UnsupportedAlgorithm (not a ValueError).
_UNKNOWN_ALG_KEY = _KEY_DER.replace(bytes.fromhex("2a8648ce3d0201"), bytes.fromhex("2b8648ce3d0201"), 1)


@CHEAP
@given(st.one_of(mutated(_KEY_PEM), mutated(_KEY_DER), _pem_text, st.binary(max_size=200)))
@example(_UNKNOWN_ALG_KEY)
def test_private_key_from_any_raises_only_decode_error(data: bytes) -> None:
    assert_outcome(attempt(_pem.private_key_from_any, data), object, _pem.DecodeError)


@MEDIUM
@given(st.one_of(mutated(_CHAIN_PEM), mutated(_CHAIN_DER)), st.one_of(st.just(_KEY_DER), mutated(_KEY_PEM)),
       st.text(max_size=20))
@example(_CHAIN_DER, _UNKNOWN_ALG_KEY, "")
@example(_BIT_STRING_CN_CHAIN, _KEY_DER, "")
def test_x509_svid_parse_raises_only_invalid_x509_svid(chain: bytes, key: bytes, hint: str) -> None:
    assert_outcome(attempt(X509Svid.parse, chain, key, hint), X509Svid, InvalidX509SvidError)


@st.composite
def resigned_leaves(draw: st.DrawFn) -> list[x509.Certificate]:
    """The leaf with its TBS edited and signed again by the real intermediate, plus the intermediate.

    The signature then verifies, so every profile and path check after it runs on the edited fields.
    """
    der = _der.signed(mutate(_LEAF_TBS, draw, max_edits=2), _MID_KEY)  # type: ignore[arg-type]
    try:
        leaf = x509.load_der_x509_certificate(der)
    except ValueError:
        leaf = _SVID.leaf
    return [leaf, _MID.cert]


def _lenient_chain(data: bytes) -> list[x509.Certificate]:
    """Certificates cryptography will load lazily from concatenated DER (our own strict checks not applied)."""
    out = []
    for der in _pem.split_der(data) if _splittable(data) else []:
        try:
            out.append(x509.load_der_x509_certificate(der))
        except ValueError:
            continue
    return out


def _splittable(data: bytes) -> bool:
    try:
        _pem.split_der(data)
    except _pem.DecodeError:
        return False
    return True


@COSTLY
@given(st.one_of(resigned_leaves(), mutated(_CHAIN_DER).map(_lenient_chain)))
def test_verify_x509_svid_raises_only_documented_errors(chain: list[x509.Certificate]) -> None:
    outcome = attempt(verify_x509_svid, chain, _BUNDLES, now=NOW)
    assert_outcome(outcome, SpiffeId, (InvalidX509SvidError, VerificationError, BundleNotFoundError))



def test_resigned_leaf_harness_verifies_unchanged() -> None:
    """Signing the unedited TBS again gives a leaf that verifies: the harness reaches past the signature."""
    leaf = x509.load_der_x509_certificate(_der.signed(_LEAF_TBS, _MID_KEY))  # type: ignore[arg-type]
    assert leaf.public_bytes(serialization.Encoding.DER) != _SVID.leaf.public_bytes(serialization.Encoding.DER)
    assert str(verify_x509_svid([leaf, _MID.cert], _BUNDLES, now=NOW)) == "spiffe://example.org/web"

"""Workload API responses as the workload library parses them: a fake or compromised agent controls them all."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from spiffe_py._proto import workload_pb2 as pb
from spiffe_py.workloadapi._convert import (
    InvalidResponseError,
    jwt_bundles_from_proto,
    jwt_svids_from_proto,
    x509_bundles_from_proto,
    x509_context_from_proto,
)
from tests.fuzz._fuzz import MEDIUM, NOW, assert_outcome, attempt, mutate
from tests.support.ca import CA

_CA = CA.create("example.org", now=NOW)
_SVID = _CA.issue_svid("spiffe://example.org/web")
_BUNDLE_DER = _CA.x509_bundle().to_der()
_JWKS = _CA.jwt_bundle().to_jwks()
_TOKEN = _CA.sign_jwt({"sub": "spiffe://example.org/web", "aud": ["svc"],
                       "exp": int((NOW + timedelta(minutes=5)).timestamp())})
_CRL = _CA.crl([_SVID.leaf.serial_number]).public_bytes(serialization.Encoding.DER)
_TD_KEYS = st.sampled_from(["spiffe://example.org", "spiffe://other.org", "example.org", "spiffe://example.org/x", ""])


def _mostly(valid: Any, fuzz: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(valid), st.just(valid), fuzz)


@st.composite
def _bytes_like(draw: st.DrawFn, good: bytes) -> bytes:
    return draw(st.one_of(st.just(good), st.just(good), st.binary(max_size=40), st.just(mutate(good, draw))))


_x509_svids = st.builds(
    pb.X509SVID,
    spiffe_id=_mostly("spiffe://example.org/web", st.text(max_size=30)),
    x509_svid=_bytes_like(_SVID.chain_der()),
    x509_svid_key=_bytes_like(_SVID.key_der()),
    bundle=_bytes_like(_BUNDLE_DER),
    hint=st.text(max_size=8) | st.just("h" * 1100),
)
_x509_responses = st.builds(
    pb.X509SVIDResponse,
    svids=st.lists(_x509_svids, max_size=2),
    crl=st.lists(_bytes_like(_CRL), max_size=1),
    federated_bundles=st.dictionaries(_TD_KEYS, _bytes_like(_BUNDLE_DER), max_size=2),
)
_jwt_responses = st.builds(pb.JWTSVIDResponse, svids=st.lists(st.builds(
    pb.JWTSVID, spiffe_id=_mostly("spiffe://example.org/web", st.text(max_size=30)),
    svid=_mostly(_TOKEN, st.text(max_size=60)), hint=st.text(max_size=8)), max_size=2))
_x509_bundle_responses = st.builds(pb.X509BundlesResponse, crl=st.lists(_bytes_like(_CRL), max_size=1),
                                   bundles=st.dictionaries(_TD_KEYS, _bytes_like(_BUNDLE_DER), max_size=2))
_jwt_bundle_responses = st.builds(pb.JWTBundlesResponse,
                                  bundles=st.dictionaries(_TD_KEYS, _bytes_like(_JWKS), max_size=2))

_PARSERS: dict[type, Any] = {
    pb.X509SVIDResponse: x509_context_from_proto,
    pb.JWTSVIDResponse: lambda r: jwt_svids_from_proto(r, ["svc"], now=NOW),
    pb.X509BundlesResponse: x509_bundles_from_proto,
    pb.JWTBundlesResponse: jwt_bundles_from_proto,
}


@st.composite
def wire(draw: st.DrawFn) -> Any:
    """A response message, or bytes (a response's encoding, edited) decoded as one."""
    msg = draw(st.one_of(_x509_responses, _jwt_responses, _x509_bundle_responses, _jwt_bundle_responses))
    if draw(st.booleans()):
        return msg
    return type(msg), mutate(msg.SerializeToString(), draw)


@MEDIUM
@given(wire())
def test_workload_api_responses_parse_with_documented_errors_only(case: Any) -> None:
    if isinstance(case, tuple):
        cls, data = case
        decoded = attempt(cls.FromString, data)
        assert_outcome(decoded, cls, DecodeError)
        if not isinstance(decoded, cls):
            return
        case = decoded
    assert_outcome(attempt(_PARSERS[type(case)], case), object, InvalidResponseError)

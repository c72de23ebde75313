"""Workload API messages to domain objects (pure; WA-07, WA-08, WA-11..WA-14, WA-23)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from spiffe_py._proto import workload_pb2 as pb
from spiffe_py.spiffeid import TrustDomain
from spiffe_py.workloadapi import InvalidResponseError
from spiffe_py.workloadapi._convert import (
    jwt_bundles_from_proto,
    jwt_svids_from_proto,
    x509_bundles_from_proto,
    x509_context_from_proto,
)
from tests.support.ca import CA
from tests.support.fake_workload_api import x509_response

TD = TrustDomain.parse("example.org")


@pytest.fixture
def ca() -> CA:
    return CA.create("example.org")


def der(ca: CA) -> bytes:
    return ca.root.cert.public_bytes(Encoding.DER)


def test_wa_13_own_bundle_comes_from_the_svid_not_a_federated_entry(ca: CA) -> None:
    stale = CA.create("example.org")
    resp = x509_response([ca.issue_svid("spiffe://example.org/web")], ca, federated={"spiffe://example.org": stale})
    ctx = x509_context_from_proto(resp)
    assert ctx.bundles.get_x509_bundle_for_trust_domain(TD).authorities == (ca.root.cert,)


@pytest.mark.parametrize("key", ["example.org", "spiffe://example.org/path", "spiffe://EXAMPLE.org", ""])
def test_wa_17_bundle_keys_must_be_trust_domain_ids(ca: CA, key: str) -> None:
    with pytest.raises(InvalidResponseError):
        x509_bundles_from_proto(pb.X509BundlesResponse(bundles={key: der(ca)}))


def test_wa_07_empty_crl_list_means_no_crls(ca: CA) -> None:
    update = x509_bundles_from_proto(pb.X509BundlesResponse(bundles={"spiffe://example.org": der(ca)}))
    assert update.crls == ()


def test_x509_bundle_with_garbage_der_is_rejected(ca: CA) -> None:
    with pytest.raises(InvalidResponseError, match=re.escape("x509 bundle for 'example.org' does not parse")):
        x509_bundles_from_proto(pb.X509BundlesResponse(bundles={"spiffe://example.org": b"\x30\x03junk"}))


def test_wa_23_jwt_bundles_must_be_jwks(ca: CA) -> None:
    assert jwt_bundles_from_proto(pb.JWTBundlesResponse(bundles={"spiffe://example.org": ca.jwt_bundle().to_jwks()}))
    with pytest.raises(InvalidResponseError, match=re.escape("jwt bundle for 'example.org' does not parse")):
        jwt_bundles_from_proto(pb.JWTBundlesResponse(bundles={"spiffe://example.org": b"{}"}))
    with pytest.raises(InvalidResponseError, match="bundles is empty"):
        jwt_bundles_from_proto(pb.JWTBundlesResponse())


def test_wa_21_jwt_hints_first_wins_and_expired_tokens_are_rejected(ca: CA) -> None:
    exp = int(ca.now.timestamp()) + 60
    web = ca.sign_jwt({"sub": "spiffe://example.org/web", "aud": ["a"], "exp": exp})
    db = ca.sign_jwt({"sub": "spiffe://example.org/db", "aud": ["a"], "exp": exp})
    resp = pb.JWTSVIDResponse(
        svids=[
            pb.JWTSVID(spiffe_id="spiffe://example.org/web", svid=web, hint="x"),
            pb.JWTSVID(spiffe_id="spiffe://example.org/db", svid=db, hint="x"),
        ]
    )
    svids = jwt_svids_from_proto(resp, ("a",), now=ca.now)
    assert [(str(s.spiffe_id), s.hint) for s in svids] == [("spiffe://example.org/web", "x")]
    with pytest.raises(InvalidResponseError, match="expired"):
        jwt_svids_from_proto(resp, ("a",), now=ca.now + timedelta(hours=1))

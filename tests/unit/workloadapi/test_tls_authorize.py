"""Authorizers and peer verification of spiffe_py.tls (pure; WA-09)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from grpclib.const import Status

from spiffe_agent.workloadapi.status import status_for as workload_status
from spiffe_py.bundle import BundleSet
from spiffe_py.errors import AuthorizationError, BundleNotFoundError, RevokedError, VerificationError
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_py.tls import authorize_any, authorize_id, authorize_member_of, authorize_one_of, verify_peer
from spiffe_server.api.errors import status_for as server_status
from tests.support.ca import CA

WEB = SpiffeId.parse("spiffe://example.org/web")
DB = SpiffeId.parse("spiffe://example.org/db")
FOREIGN = SpiffeId.parse("spiffe://other.org/web")


def test_authorize_any_accepts_everyone() -> None:
    for peer in (WEB, DB, FOREIGN):
        authorize_any()(peer, ())


def test_authorize_id() -> None:
    authorize_id(WEB)(WEB, ())
    with pytest.raises(AuthorizationError, match=re.escape("tls: unexpected id 'spiffe://example.org/db'")):
        authorize_id(WEB)(DB, ())


def test_authorize_one_of() -> None:
    authorizer = authorize_one_of(WEB, DB)
    authorizer(WEB, ())
    authorizer(DB, ())
    with pytest.raises(AuthorizationError, match="not one of the allowed ids"):
        authorizer(FOREIGN, ())


def test_authorize_one_of_nothing_rejects_all() -> None:
    with pytest.raises(AuthorizationError):
        authorize_one_of()(WEB, ())


def test_authorize_member_of() -> None:
    authorizer = authorize_member_of(TrustDomain.parse("example.org"))
    authorizer(WEB, ())
    with pytest.raises(AuthorizationError, match=re.escape("unexpected trust domain 'other.org'")):
        authorizer(FOREIGN, ())


def test_authorization_error_maps_to_permission_denied() -> None:
    err = AuthorizationError("denied")
    assert server_status(err) is Status.PERMISSION_DENIED and workload_status(err) is Status.PERMISSION_DENIED


@pytest.fixture
def ca() -> CA:
    return CA.create("example.org")


def test_verify_peer_returns_the_authorized_id(ca: CA) -> None:
    issued = ca.child_ca().issue_svid(str(WEB))
    assert verify_peer(issued.chain, BundleSet.of(ca.x509_bundle()), authorize_id(WEB), now=ca.now) == WEB


def test_verify_peer_authorizer_runs_after_authentication(ca: CA) -> None:
    issued = ca.issue_svid(str(DB))
    with pytest.raises(AuthorizationError):
        verify_peer(issued.chain, BundleSet.of(ca.x509_bundle()), authorize_id(WEB), now=ca.now)


def test_wa_09_peer_needs_its_own_trust_domain_bundle(ca: CA) -> None:
    foreign = CA.create("other.org")
    issued = foreign.issue_svid(str(FOREIGN))
    # Pooling would accept this chain; per-TD lookup must not (WA-09).
    bundles = BundleSet.of(ca.x509_bundle())
    with pytest.raises(BundleNotFoundError):
        verify_peer(issued.chain, bundles, authorize_any(), now=ca.now)


def test_wa_09_wrong_root_for_the_trust_domain_is_rejected(ca: CA) -> None:
    impostor = CA.create("example.org")
    issued = impostor.issue_svid(str(WEB))
    with pytest.raises(VerificationError):
        verify_peer(issued.chain, BundleSet.of(ca.x509_bundle()), authorize_any(), now=ca.now)


def test_expired_peer_is_rejected(ca: CA) -> None:
    issued = ca.issue_svid(str(WEB), ttl=timedelta(minutes=5))
    with pytest.raises(VerificationError):
        verify_peer(issued.chain, BundleSet.of(ca.x509_bundle()), authorize_any(), now=ca.now + timedelta(hours=1))


def test_revoked_peer_is_rejected(ca: CA) -> None:
    issued = ca.issue_svid(str(WEB))
    crl = ca.crl([issued.leaf])
    with pytest.raises(RevokedError):
        verify_peer(issued.chain, BundleSet.of(ca.x509_bundle()), authorize_any(), now=ca.now, crls=[crl])

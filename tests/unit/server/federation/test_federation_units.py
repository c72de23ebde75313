"""Pure parts of federation: relationship settings, fetched-bundle checks, refresh bounds, config,
and the sync message that tells agents the last federated bundle is gone."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from spiffe_agent.manager.convert import sync_update_from_proto
from spiffe_py._proto.spiffepy.server.v1 import types_pb2
from spiffe_py.bundle import SpiffeBundle
from spiffe_py.errors import InvalidBundleError
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_server.api.sync import SyncState
from spiffe_server.config import ConfigError, parse_config
from spiffe_server.federation.relationship import (
    MAX_REFRESH,
    MIN_REFRESH,
    FetchRefused,
    Profile,
    RelationshipError,
    check_endpoint_id,
    check_fetched_bundle,
    parse_bootstrap_bundle,
    parse_relationship,
    refresh_interval,
)
from tests.support.ca import CA

A, B = TrustDomain("a.test"), TrustDomain("b.test")
SERVER_ID = "spiffe://b.test/spire/server"


def test_https_spiffe_relationship_needs_the_endpoint_id() -> None:
    rel = parse_relationship("b.test", "https://127.0.0.1:8443", "https_spiffe", SERVER_ID, own=A)
    assert (rel.trust_domain, rel.profile) == (B, Profile.HTTPS_SPIFFE)
    assert rel.endpoint_spiffe_id == SpiffeId.parse(SERVER_ID)
    with pytest.raises(RelationshipError, match="endpoint_spiffe_id: required"):
        parse_relationship("b.test", "https://127.0.0.1:8443", "https_spiffe", "", own=A)


@pytest.mark.parametrize(("args", "message"), [
    (("b.test", "http://b.example/", "https_web", ""), "bundle_endpoint_url: must be an https:// URL"),
    (("b.test", "https://user:pw@b.example/", "https_web", ""), "bundle_endpoint_url: must not carry userinfo"),
    (("b.test", "https://b.example/#frag", "https_web", ""), "bundle_endpoint_url: must not have a fragment"),
    (("b.test", "https:///path", "https_web", ""), "bundle_endpoint_url: must be an https:// URL with a host"),
    (("b.test", "https://b.example:99999/", "https_web", ""), "bundle_endpoint_url: not a valid URL"),
    (("b.test", "https://b.example/", "https", ""), "bundle_endpoint_profile: must be https_web or https_spiffe"),
    (("b.test", "https://b.example/", "https_web", SERVER_ID), "endpoint_spiffe_id: only the https_spiffe"),
    (("a.test", "https://b.example/", "https_web", ""), "trust_domain: 'a.test' is this server's own"),
    (("B TEST", "https://b.example/", "https_web", ""), "trust_domain:"),
    (("b.test", "https://b.example/", "https_spiffe", "not-an-id"), "endpoint_spiffe_id:"),
])
def test_bad_relationships_name_the_field(args: tuple[str, str, str, str], message: str) -> None:
    with pytest.raises(RelationshipError) as exc:
        parse_relationship(*args, own=A)
    assert str(exc.value).startswith(message), str(exc.value)


def test_refresh_interval_is_the_hint_bounded() -> None:
    assert refresh_interval(None) == timedelta(minutes=5)
    assert refresh_interval(timedelta(seconds=5)) == timedelta(seconds=5)
    assert refresh_interval(timedelta(0)) == MIN_REFRESH
    assert refresh_interval(timedelta(days=30)) == MAX_REFRESH


def test_fetched_bundle_checks() -> None:
    ca = CA.create(B)
    good = ca.spiffe_bundle(sequence_number=3)
    assert check_fetched_bundle(B, good.to_json(), previous=None) == good
    with pytest.raises(FetchRefused) as stale:
        check_fetched_bundle(B, ca.spiffe_bundle(sequence_number=2).to_json(), previous=good)
    assert stale.value.reason == "stale_sequence"
    with pytest.raises(FetchRefused) as other:
        check_fetched_bundle(B, CA.create("c.test").spiffe_bundle().to_json(), previous=good)
    assert other.value.reason == "wrong_trust_domain"
    for body in (b"{", b'{"keys": []}', b"[]"):
        with pytest.raises(FetchRefused) as bad:
            check_fetched_bundle(B, body, previous=good)
        assert bad.value.reason == "invalid_bundle"
    without_sequence = SpiffeBundle(B, good.x509_authorities, good.jwt_authorities)
    assert check_fetched_bundle(B, without_sequence.to_json(), previous=good) == without_sequence  # newest wins


def test_endpoint_id_check() -> None:
    ca = CA.create(B)
    check_endpoint_id(ca.issue_svid(SERVER_ID).leaf, SpiffeId.parse(SERVER_ID))
    for leaf in (ca.issue_svid("spiffe://b.test/other").leaf, ca.issue_svid(SERVER_ID, is_ca=True).leaf,
                 ca.issue_svid(SERVER_ID, uris=[SERVER_ID, "spiffe://b.test/x"]).leaf):
        with pytest.raises(FetchRefused) as exc:
            check_endpoint_id(leaf, SpiffeId.parse(SERVER_ID))
        assert exc.value.reason == "wrong_spiffe_id"


def test_bootstrap_bundle_is_json_or_pem() -> None:
    ca = CA.create(B)
    assert parse_bootstrap_bundle(B, ca.spiffe_bundle().to_json()).x509_authorities == (ca.cert,)
    assert parse_bootstrap_bundle(B, ca.x509_bundle().to_pem()).x509_authorities == (ca.cert,)
    with pytest.raises(InvalidBundleError):
        parse_bootstrap_bundle(B, b'{"keys": []}')


ENDPOINT = '[federation.bundle_endpoint]\nbind_port = 8443\nrefresh_hint = "5m"\n'


def test_federation_config() -> None:
    cfg = parse_config(f'trust_domain = "a.test"\n{ENDPOINT}profile = "https_spiffe"\n'
                       '[federation.federates_with."b.test"]\nbundle_endpoint_url = "https://b.example:8443"\n'
                       f'bundle_endpoint_profile = "https_spiffe"\nendpoint_spiffe_id = "{SERVER_ID}"\n')
    endpoint = cfg.federation.bundle_endpoint
    assert endpoint is not None and (endpoint.profile, endpoint.refresh_hint) == ("https_spiffe", timedelta(minutes=5))
    assert [r.trust_domain for r in cfg.federation.federates_with] == ["b.test"]
    assert cfg.warnings() == []
    insecure = parse_config(f'trust_domain = "a.test"\n{ENDPOINT}insecure_http = true\n')
    assert any("insecure_http" in w for w in insecure.warnings())


@pytest.mark.parametrize(("text", "message"), [
    ('[bundle_endpoint]\nbind_port = 1\n', "config: bundle_endpoint: replaced by [federation.bundle_endpoint]"),
    (f'{ENDPOINT}profile = "https_web"\n', "config: federation.bundle_endpoint.cert_file: required by profile"),
    (f'{ENDPOINT}cert_file = "/x"\n', "config: federation.bundle_endpoint.cert_file: profile https_spiffe serves"),
    (f'{ENDPOINT}insecure_http = true\nprofile = "https_web"\n', "config: federation.bundle_endpoint.insecure_http"),
    (f'{ENDPOINT}profile = "http"\n', "config: federation.bundle_endpoint.profile: must be one of"),
    ('[federation.bundle_endpoint]\nrefresh_hint = "0s"\n',
     "config: federation.bundle_endpoint.refresh_hint: must be positive"),
    ('[federation.federates_with."b.test"]\nbundle_endpoint_url = "https://b"\n',
     "config: federation.federates_with.b.test.bundle_endpoint_profile: required"),
    ('[federation.federates_with."b.test"]\nbundle_endpoint_url = "http://b"\nbundle_endpoint_profile = "https_web"\n',
     "config: federation.federates_with.b.test.bundle_endpoint_url: must be an https:// URL"),
    ('[federation]\nbogus = 1\n', "config: unknown key 'federation.bogus'"),
])
def test_bad_federation_config_names_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(f'trust_domain = "a.test"\n{text}')
    assert str(exc.value).startswith(message), str(exc.value)


def test_removing_the_last_federated_bundle_reaches_the_agent() -> None:
    """An empty federated list used to read as "unchanged" on the agent: removals waited for a full resync."""
    state = SyncState()
    own = types_pb2.Bundle(trust_domain="a.test", sequence_number=1)
    foreign = types_pb2.Bundle(trust_domain="b.test", sequence_number=4)
    (first,) = state.plan({}, own, [foreign])
    assert [b.trust_domain for b in sync_update_from_proto(first).federated_bundles or ()] == [B]
    (removal,) = state.plan({}, own, [])
    update = sync_update_from_proto(removal)
    assert not removal.full and update.federated_bundles == ()
    assert state.plan({}, own, []) == []  # nothing more to say
    (unrelated,) = state.plan({}, types_pb2.Bundle(trust_domain="a.test", sequence_number=2), [])
    assert sync_update_from_proto(unrelated).federated_bundles is None  # untouched: not a removal


def test_jwks_in_fetched_bundle_keep_use() -> None:
    body = CA.create(B).spiffe_bundle(sequence_number=1, refresh_hint=timedelta(seconds=5)).to_json()
    doc = json.loads(body)
    assert {k["use"] for k in doc["keys"]} == {"x509-svid", "jwt-svid"} and doc["spiffe_refresh_hint"] == 5

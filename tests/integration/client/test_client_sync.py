"""WorkloadApiClient (grpcio, sync) against the fake Workload API over a real Unix socket."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from grpclib.const import Status

from spiffe_py._proto import workload_pb2 as pb
from spiffe_py.errors import NoIdentityError, WorkloadApiError
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_py.workloadapi import InvalidResponseError, WorkloadApiClient
from tests.support.ca import CA
from tests.support.fake_workload_api import FakeWorkloadApi, x509_response, x509_svid_message

from .conftest import TD, WEB_ID, client_calls, jwt_token, serve_everything, serve_jwt, wait_until

FED = "spiffe://fed.example"


@pytest.mark.parametrize("name", sorted(client_calls()))
def test_we_04_each_fetch_makes_exactly_one_rpc_with_the_security_header(
    api: FakeWorkloadApi, ca: CA, name: str
) -> None:
    rpc, call = client_calls(serve_everything(api, ca))[name]
    with WorkloadApiClient(api.address) as client:
        call(client)
    assert sum(api.calls.values()) == 1
    assert api.calls[rpc] == 1
    assert [(r, m["workload.spiffe.io"]) for r, m in api.metadata] == [(rpc, "true")]


def test_wa_29_fetch_x509_context_default_first_bundles_and_crls(api: FakeWorkloadApi, ca: CA) -> None:
    fed = CA.create("fed.example")
    web = ca.issue_svid(WEB_ID)
    db = ca.issue_svid("spiffe://example.org/db")
    crl = ca.crl([db.leaf.serial_number])
    api.set_x509(x509_response([web, db], ca, federated={FED: fed}, crls=[crl]))
    with WorkloadApiClient(api.address) as client:
        ctx = client.fetch_x509_context()
    assert [str(s.spiffe_id) for s in ctx.svids] == [WEB_ID, "spiffe://example.org/db"]
    assert ctx.default_svid.leaf.serial_number == web.leaf.serial_number
    own = ctx.bundles.get_x509_bundle_for_trust_domain(TrustDomain.parse(TD))
    assert own.authorities == (ca.root.cert,)
    assert ctx.bundles.get_x509_bundle_for_trust_domain(TrustDomain.parse("fed.example")).authorities == (fed.cert,)
    assert [c.get_revoked_certificate_by_serial_number(db.leaf.serial_number) is not None for c in ctx.crls] == [True]


def test_wa_14_duplicate_hints_keep_the_first(api: FakeWorkloadApi, ca: CA) -> None:
    first, second = ca.issue_svid(WEB_ID), ca.issue_svid("spiffe://example.org/db")
    api.set_x509(
        pb.X509SVIDResponse(svids=[x509_svid_message(first, ca, hint="h"), x509_svid_message(second, ca, hint="h")])
    )
    with WorkloadApiClient(api.address) as client:
        svids = client.fetch_x509_svids()
    assert [(str(s.spiffe_id), s.hint) for s in svids] == [(WEB_ID, "h")]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r.ClearField("svids"), "svids is empty"),
        (lambda r: setattr(r.svids[0], "x509_svid_key", b""), "x509 svid field 'x509_svid_key' is empty"),
        (lambda r: setattr(r.svids[0], "bundle", b""), "x509 svid field 'bundle' is empty"),
        (lambda r: setattr(r.svids[0], "spiffe_id", "spiffe://example.org/other"), "does not match its certificate"),
        (lambda r: setattr(r.svids[0], "x509_svid", b"junk"), "x509 svid does not parse"),
        (lambda r: r.federated_bundles.__setitem__("fed.example", b"x"), "is not a trust domain spiffe id"),
        (lambda r: r.crl.append(b"not a crl"), "crl does not parse"),
        (lambda r: setattr(r.svids[0], "hint", "h" * 1025), "hint is longer than 1024 bytes"),  # WA-30
    ],
)
def test_wa_08_invalid_x509_response_is_an_error(
    api: FakeWorkloadApi, ca: CA, mutate: Callable[[pb.X509SVIDResponse], None], reason: str
) -> None:
    response = x509_response([ca.issue_svid(WEB_ID)], ca)
    mutate(response)
    api.set_x509(response)
    with WorkloadApiClient(api.address) as client, pytest.raises(InvalidResponseError) as info:
        client.fetch_x509_context()
    assert reason in str(info.value)


def test_we_14_permission_denied_is_no_identity_error(api: FakeWorkloadApi) -> None:
    api.fail("FetchX509SVID", Status.PERMISSION_DENIED, "no identity issued")
    with WorkloadApiClient(api.address) as client, pytest.raises(NoIdentityError) as info:
        client.fetch_x509_svid()
    assert (info.value.status, info.value.details) == ("PERMISSION_DENIED", "no identity issued")


def test_we_13_other_status_is_workload_api_error(api: FakeWorkloadApi) -> None:
    api.fail("FetchJWTBundles", Status.UNAVAILABLE, "starting up")
    with WorkloadApiClient(api.address) as client, pytest.raises(WorkloadApiError) as info:
        client.fetch_jwt_bundles()
    assert not isinstance(info.value, NoIdentityError)
    assert (info.value.status, info.value.details) == ("UNAVAILABLE", "starting up")


def test_wa_05_watch_yields_full_state_on_each_push_and_wa_07_empty_clears(api: FakeWorkloadApi, ca: CA) -> None:
    fed = CA.create("fed.example")
    first, rotated = ca.issue_svid(WEB_ID), ca.issue_svid(WEB_ID)
    api.set_x509(x509_response([first], ca, federated={FED: fed}))
    with WorkloadApiClient(api.address) as client, client.watch_x509_context() as watch:
        one = next(watch)
        api.set_x509(x509_response([rotated], ca))
        two = next(watch)
    assert one.default_svid.leaf.serial_number == first.leaf.serial_number
    assert {b.trust_domain.name for b in one.bundles.x509_bundles()} == {TD, "fed.example"}
    assert two.default_svid.leaf.serial_number == rotated.leaf.serial_number
    assert {b.trust_domain.name for b in two.bundles.x509_bundles()} == {TD}  # WA-07: no stale federation
    assert api.calls["FetchX509SVID"] == 1


def test_wa_08_watch_discards_invalid_messages(api: FakeWorkloadApi, ca: CA) -> None:
    good = ca.issue_svid(WEB_ID)
    api.set_x509(pb.X509SVIDResponse())
    with WorkloadApiClient(api.address) as client, client.watch_x509_context() as watch:
        wait_for_calls(api, "FetchX509SVID")
        api.set_x509(x509_response([good], ca))
        update = next(watch)
    assert update.default_svid.leaf.serial_number == good.leaf.serial_number


def wait_for_calls(api: FakeWorkloadApi, rpc: str) -> None:
    wait_until(lambda: api.calls[rpc] >= 1, f"{rpc} to be called")


def test_watch_error_status_is_raised(api: FakeWorkloadApi) -> None:
    with WorkloadApiClient(api.address) as client, client.watch_x509_context() as watch:
        next(watch)
        api.fail("FetchX509SVID", Status.PERMISSION_DENIED, "entry deleted")
        with pytest.raises(NoIdentityError, match="entry deleted"):
            next(watch)


def test_wa_20_fetch_jwt_svid_sends_audience_and_subject(api: FakeWorkloadApi, ca: CA) -> None:
    token = jwt_token(ca, ("aud-1", "aud-2"))
    serve_jwt(api, token, hint="internal")
    with WorkloadApiClient(api.address) as client:
        svid = client.fetch_jwt_svid(["aud-1", "aud-2"], SpiffeId.parse(WEB_ID))
    assert (str(svid.spiffe_id), svid.token, svid.audience, svid.hint) == (
        WEB_ID,
        token,
        ("aud-1", "aud-2"),
        "internal",
    )
    [(rpc, request)] = api.requests
    assert (rpc, list(request.audience), request.spiffe_id) == ("FetchJWTSVID", ["aud-1", "aud-2"], WEB_ID)


def test_wa_19_token_without_the_requested_audience_is_discarded(api: FakeWorkloadApi, ca: CA) -> None:
    token = jwt_token(ca, ("aud-1",))
    serve_jwt(api, token)
    with WorkloadApiClient(api.address) as client, pytest.raises(InvalidResponseError) as info:
        client.fetch_jwt_svid(["aud-1", "aud-2"])
    assert "token audience does not include 'aud-2'" in str(info.value)
    assert token not in str(info.value)


def test_wa_21_empty_jwt_svids_is_an_error(api: FakeWorkloadApi) -> None:
    api.set_response("FetchJWTSVID", pb.JWTSVIDResponse())
    with WorkloadApiClient(api.address) as client, pytest.raises(InvalidResponseError, match="svids is empty"):
        client.fetch_jwt_svid("aud-1")


def test_wa_23_jwt_bundles_parse_per_trust_domain(api: FakeWorkloadApi, ca: CA) -> None:
    serve_everything(api, ca)
    with WorkloadApiClient(api.address) as client:
        bundles = client.fetch_jwt_bundles()
    bundle = bundles.get_jwt_bundle_for_trust_domain(TrustDomain.parse(TD))
    assert bundle.find(ca.root.jwt_kid) == ca.jwt_signing_key().public_key()


def test_wa_19_empty_audience_is_refused_locally(api: FakeWorkloadApi) -> None:
    with WorkloadApiClient(api.address) as client, pytest.raises(ValueError, match="audience"):
        client.fetch_jwt_svid([])
    assert sum(api.calls.values()) == 0


def test_wa_26_validate_needs_spiffe_id_and_claims(api: FakeWorkloadApi, ca: CA) -> None:
    token = serve_everything(api, ca)
    api.set_response("ValidateJWTSVID", pb.ValidateJWTSVIDResponse(spiffe_id=WEB_ID))
    with WorkloadApiClient(api.address) as client, pytest.raises(InvalidResponseError) as info:
        client.validate_jwt_svid(token, "aud-1")
    assert "'claims' is empty" in str(info.value)
    assert token not in str(info.value)


def test_validated_token_must_name_the_reported_id(api: FakeWorkloadApi, ca: CA) -> None:
    token = serve_everything(api, ca)
    other = "spiffe://example.org/other"
    api.set_response("ValidateJWTSVID", pb.ValidateJWTSVIDResponse(spiffe_id=other, claims={"sub": other}))
    with WorkloadApiClient(api.address) as client, pytest.raises(InvalidResponseError, match="does not match"):
        client.validate_jwt_svid(token, "aud-1")


def test_constructor_with_unreachable_socket_does_not_connect(short_dir: Path) -> None:
    """Constructing touches no socket; the first call reports the failure."""
    client = WorkloadApiClient(f"unix://{short_dir}/nothing-here.sock", timeout=5.0)
    with client, pytest.raises(WorkloadApiError) as info:
        client.fetch_x509_svid()
    assert info.value.status == "UNAVAILABLE"


def test_we_08_address_from_environment(api: FakeWorkloadApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIFFE_ENDPOINT_SOCKET", api.address)
    with WorkloadApiClient() as client:
        assert str(client.fetch_x509_svid().spiffe_id) == WEB_ID

"""X509Source / JwtSource following the fake Workload API: rotation, backoff, redaction (WA-04, WA-16)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from grpclib.const import Status

from spiffe_py._proto import workload_pb2 as pb
from spiffe_py.errors import BundleNotFoundError, NoIdentityError, WorkloadApiError
from spiffe_py.spiffeid import TrustDomain
from spiffe_py.workloadapi import AsyncWorkloadApiClient, Backoff, JwtSource, WorkloadApiClient, X509Source
from tests.support.ca import CA
from tests.support.fake_workload_api import FakeWorkloadApi, x509_response

from .conftest import TD, WEB_ID, wait_until

FAST = Backoff(initial=0.05, maximum=0.5)


def serial(source: X509Source) -> int:
    return source.get_x509_svid().leaf.serial_number


def test_x509_source_follows_rotation(api: FakeWorkloadApi, ca: CA) -> None:
    with X509Source.start(WorkloadApiClient(api.address), timeout=20) as source:
        first = serial(source)
        rotated = ca.issue_svid(WEB_ID)
        api.set_x509(x509_response([rotated], ca))
        wait_until(lambda: serial(source) == rotated.leaf.serial_number, "the source to pick up the rotated SVID")
        bundle = source.get_x509_bundle_for_trust_domain(TrustDomain.parse(TD))
    assert first != rotated.leaf.serial_number
    assert bundle.authorities == (ca.root.cert,)
    assert api.calls["FetchX509SVID"] == 1  # one long-lived stream, no polling


def test_wa_04_source_reconnects_with_backoff_after_server_restart(api: FakeWorkloadApi, ca: CA) -> None:
    with X509Source.start(WorkloadApiClient(api.address), timeout=20, backoff=FAST) as source:
        api.stop()
        rotated = ca.issue_svid(WEB_ID)
        api.set_x509(x509_response([rotated], ca))
        api.start()
        wait_until(lambda: serial(source) == rotated.leaf.serial_number, "the source to reconnect")
    assert api.calls["FetchX509SVID"] >= 2


def test_we_05_invalid_argument_stops_without_retry(api: FakeWorkloadApi) -> None:
    api.fail("FetchX509SVID", Status.INVALID_ARGUMENT, "bad request")
    with pytest.raises(WorkloadApiError) as info:
        X509Source.start(WorkloadApiClient(api.address), timeout=20, backoff=FAST)
    assert info.value.status == "INVALID_ARGUMENT"
    assert api.calls["FetchX509SVID"] == 1


def test_wa_16_permission_denied_redacts_until_the_next_update(api: FakeWorkloadApi, ca: CA) -> None:
    with X509Source.start(WorkloadApiClient(api.address), timeout=20, backoff=FAST) as source:
        api.fail("FetchX509SVID", Status.PERMISSION_DENIED, "entry deleted")
        wait_until(lambda: _raises_no_identity(source), "the SVID to be redacted")
        api.recover("FetchX509SVID")
        wait_until(lambda: not _raises_no_identity(source), "the SVID to come back")
        assert str(source.get_x509_svid().spiffe_id) == WEB_ID


def _raises_no_identity(source: X509Source) -> bool:
    try:
        source.get_x509_svid()
    except NoIdentityError:
        return True
    return False


def test_start_times_out_on_unreachable_socket_with_the_cause(short_dir: Path) -> None:
    client = WorkloadApiClient(f"unix://{short_dir}/absent.sock")
    with pytest.raises(TimeoutError) as info:
        X509Source.start(client, timeout=0.5, backoff=FAST)
    assert isinstance(info.value.__cause__, WorkloadApiError)
    assert info.value.__cause__.status == "UNAVAILABLE"


def test_closed_source_refuses_reads(api: FakeWorkloadApi) -> None:
    source = X509Source.start(WorkloadApiClient(api.address), timeout=20)
    source.close()
    source.close()  # idempotent
    with pytest.raises(ValueError, match="source is closed"):
        source.get_x509_svid()


async def test_async_x509_source_create_and_rotation(api: FakeWorkloadApi, ca: CA) -> None:
    client = AsyncWorkloadApiClient(api.address)
    async with await X509Source.create(client, timeout=20) as source:
        rotated = ca.issue_svid(WEB_ID)
        api.set_x509(x509_response([rotated], ca))
        await async_wait(lambda: serial(source) == rotated.leaf.serial_number)
        assert str(source.get_x509_svid().spiffe_id) == WEB_ID
    assert source.closed
    await client.close()


async def async_wait(predicate: Callable[[], bool]) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.02)
    pytest.fail("timed out waiting for the async source")


def jwt_bundles(ca: CA) -> pb.JWTBundlesResponse:
    return pb.JWTBundlesResponse(bundles={f"spiffe://{TD}": ca.jwt_bundle().to_jwks()})


def test_jwt_source_bundles_and_fetch(api: FakeWorkloadApi, ca: CA) -> None:
    token = ca.sign_jwt({"sub": WEB_ID, "aud": ["a"], "exp": int(ca.now.timestamp()) + 600})
    api.set_response("FetchJWTBundles", jwt_bundles(ca))
    api.set_response("FetchJWTSVID", pb.JWTSVIDResponse(svids=[pb.JWTSVID(spiffe_id=WEB_ID, svid=token)]))
    with JwtSource.start(WorkloadApiClient(api.address), timeout=20) as source:
        bundle = source.get_jwt_bundle_for_trust_domain(TrustDomain.parse(TD))
        svid = source.fetch_jwt_svid("a")
        with pytest.raises(BundleNotFoundError):
            source.get_jwt_bundle_for_trust_domain(TrustDomain.parse("other.example"))
    assert bundle.find(ca.root.jwt_kid) is not None
    assert (str(svid.spiffe_id), svid.token) == (WEB_ID, token)


async def test_async_jwt_source(api: FakeWorkloadApi, ca: CA) -> None:
    api.set_response("FetchJWTBundles", jwt_bundles(ca))
    client = AsyncWorkloadApiClient(api.address)
    async with await JwtSource.create(client, timeout=20) as source:
        assert source.get_jwt_bundle_for_trust_domain(TrustDomain.parse(TD)).trust_domain.name == TD
    await client.close()

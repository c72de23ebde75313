"""AsyncWorkloadApiClient (grpc.aio) against the fake Workload API over a real Unix socket."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from grpclib.const import Status

from spiffe_py._proto import workload_pb2 as pb
from spiffe_py.errors import NoIdentityError, WorkloadApiError
from spiffe_py.spiffeid import TrustDomain
from spiffe_py.workloadapi import AsyncWorkloadApiClient, InvalidResponseError
from tests.support.ca import CA
from tests.support.fake_workload_api import FakeWorkloadApi, x509_response

from .conftest import TD, WEB_ID, client_calls, serve_everything


@pytest.mark.parametrize("name", sorted(client_calls()))
async def test_we_04_each_async_fetch_makes_exactly_one_rpc_with_the_security_header(
    api: FakeWorkloadApi, ca: CA, name: str
) -> None:
    rpc, call = client_calls(serve_everything(api, ca))[name]
    async with AsyncWorkloadApiClient(api.address) as client:
        await call(client)
    assert sum(api.calls.values()) == 1
    assert [(r, m["workload.spiffe.io"]) for r, m in api.metadata] == [(rpc, "true")]


async def test_wa_05_async_watch_yields_each_full_state(api: FakeWorkloadApi, ca: CA) -> None:
    rotated = ca.issue_svid(WEB_ID)
    async with AsyncWorkloadApiClient(api.address) as client:
        watch = client.watch_x509_context()
        first = await anext(watch)
        api.set_x509(x509_response([rotated], ca))
        second = await anext(watch)
        await watch.aclose()
    assert first.default_svid.leaf.serial_number != rotated.leaf.serial_number
    assert second.default_svid.leaf.serial_number == rotated.leaf.serial_number
    assert api.calls["FetchX509SVID"] == 1


async def test_async_x509_bundles_and_crls(api: FakeWorkloadApi, ca: CA) -> None:
    revoked = ca.issue_svid(WEB_ID)
    crl_der = ca.crl([revoked.leaf]).public_bytes(Encoding.DER)
    root_der = ca.root.cert.public_bytes(Encoding.DER)
    api.set_response("FetchX509Bundles", pb.X509BundlesResponse(bundles={f"spiffe://{TD}": root_der}, crl=[crl_der]))
    async with AsyncWorkloadApiClient(api.address) as client:
        update = await client.fetch_x509_bundles()
    assert update.bundles.get_x509_bundle_for_trust_domain(TrustDomain.parse(TD)).authorities == (ca.root.cert,)
    assert [crl.public_bytes(Encoding.DER) for crl in update.crls] == [crl_der]


async def test_wa_17_empty_x509_bundles_is_an_error(api: FakeWorkloadApi) -> None:
    api.set_response("FetchX509Bundles", pb.X509BundlesResponse())
    async with AsyncWorkloadApiClient(api.address) as client:
        with pytest.raises(InvalidResponseError, match="bundles is empty"):
            await client.fetch_x509_bundles()


async def test_async_permission_denied_is_no_identity_error(api: FakeWorkloadApi) -> None:
    api.fail("FetchJWTSVID", Status.PERMISSION_DENIED, "no identity issued")
    async with AsyncWorkloadApiClient(api.address) as client:
        with pytest.raises(NoIdentityError) as info:
            await client.fetch_jwt_svid("aud-1")
    assert (info.value.status, info.value.details) == ("PERMISSION_DENIED", "no identity issued")


async def test_we_15_unimplemented_is_reported(api: FakeWorkloadApi) -> None:
    api.fail("FetchX509SVID", Status.UNIMPLEMENTED, "disabled")
    async with AsyncWorkloadApiClient(api.address) as client:
        with pytest.raises(WorkloadApiError) as info:
            await client.fetch_x509_context()
    assert info.value.status == "UNIMPLEMENTED"


async def test_async_constructor_does_not_connect(short_dir: Path) -> None:
    client = AsyncWorkloadApiClient(f"unix://{short_dir}/absent.sock", timeout=5.0)
    async with client:
        with pytest.raises(WorkloadApiError) as info:
            await client.fetch_x509_svid()
    assert info.value.status == "UNAVAILABLE"

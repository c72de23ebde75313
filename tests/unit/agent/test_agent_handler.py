"""Workload API handler status codes and ordering of checks (WE-05/06, WE-13/14, WA-05/06, WA-19, WA-26, WA-28)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.testing import ChannelFor

from spiffe_agent.errors import NoIdentityIssuedError, NotReadyError, WorkloadAttestationError
from spiffe_agent.manager.cache import Entry, Identity, IssuedSvid, JwtToken, WorkloadView
from spiffe_agent.manager.storage import StorageError
from spiffe_agent.workloadapi.handler import WorkloadApiHandler
from spiffe_agent.workloadapi.source import ManagerSource
from spiffe_py._proto import workload_pb2
from spiffe_py._proto.workload_grpc import SpiffeWorkloadAPIStub
from spiffe_py.bundle import SpiffeBundle
from spiffe_py.errors import InvalidJwtSvidError
from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from tests.unit.agent.test_agent_unix_attestor import StubCaller

TD = TrustDomain.parse("example.org")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
HDR = {"workload.spiffe.io": "true"}
SID = SpiffeId.parse("spiffe://example.org/w")
ENTRY = Entry(id="e1", spiffe_id=SID, selectors=frozenset({Selector("unix", "uid:1")}), hint="web")
SVID = IssuedSvid("e1", SID, (b"\x30\x01", b"\x30\x02"), b"KEY", NOW, NOW + timedelta(hours=1))
FULL = WorkloadView((Identity(ENTRY, SVID),), SpiffeBundle(TD), crls=(b"\x30\x05",))


class FakeAttestor:
    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    async def attest(self, caller: object) -> frozenset[Selector]:
        self.calls += 1
        if self.fail:
            raise WorkloadAttestationError("attest: caller pid 1 exited during attestation")
        return frozenset({Selector("unix", "uid:1")})


class FakeSub:
    def __init__(self, source: FakeSource) -> None:
        self.source = source

    async def next(self) -> WorkloadView:
        return await self.source.views.get()


class FakeSource:
    def __init__(self, *views: WorkloadView, ready: bool = True) -> None:
        self.views: asyncio.Queue[WorkloadView] = asyncio.Queue()
        for v in views:
            self.views.put_nowait(v)
        self.ready = ready
        self.jwt_calls: list[tuple[Sequence[str], SpiffeId | None]] = []
        self.asked: SpiffeId | None = None

    def view(self, selectors: frozenset[Selector], process: object = None) -> WorkloadView:
        if not self.ready:
            raise NotReadyError("agent: not synced with the server yet")
        return FULL

    @contextlib.asynccontextmanager
    async def subscribe(self, selectors: frozenset[Selector], process: object = None,
                        svids: bool = False) -> AsyncIterator[FakeSub]:
        if not self.ready:
            raise NotReadyError("agent: not synced with the server yet")
        yield FakeSub(self)

    def jwt_entries(self, selectors: frozenset[Selector], spiffe_id: SpiffeId | None = None,
                    process: object = None) -> list[Entry]:
        self.view(selectors)
        self.asked = spiffe_id
        if spiffe_id is not None and spiffe_id != SID:
            raise NoIdentityIssuedError("no identity issued")
        return [ENTRY]

    async def jwt_svids(self, entries: Sequence[Entry], audience: Sequence[str],
                        process: object = None) -> list[tuple[Entry, JwtToken]]:
        assert list(entries) == [ENTRY]
        self.jwt_calls.append((audience, self.asked))
        return [(ENTRY, JwtToken("tok", SID, tuple(audience), NOW, NOW + timedelta(minutes=5)))]


class FakeValidator:
    def validate(
        self, token: str, audience: str, bundles: Sequence[SpiffeBundle]
    ) -> tuple[SpiffeId, Mapping[str, Any]]:
        assert [b.trust_domain for b in bundles] == [TD]
        if token != "good":
            raise InvalidJwtSvidError("jwtsvid: token is malformed")
        return SID, {"sub": str(SID), "aud": [audience], "exp": 1767225600}


@contextlib.asynccontextmanager
async def client(
    source: FakeSource, attestor: FakeAttestor | None = None
) -> AsyncIterator[tuple[SpiffeWorkloadAPIStub, FakeAttestor]]:
    att = attestor or FakeAttestor()
    handler = WorkloadApiHandler(
        attestor=att, source=ManagerSource(source), validator=FakeValidator(), caller_of=lambda _s: StubCaller(1)
    )
    async with ChannelFor([handler]) as channel:
        yield SpiffeWorkloadAPIStub(channel), att


async def first_x509(stub: SpiffeWorkloadAPIStub, metadata: Any = HDR) -> workload_pb2.X509SVIDResponse:
    async with stub.FetchX509SVID.open(metadata=metadata) as stream:
        await stream.send_message(workload_pb2.X509SVIDRequest(), end=True)
        msg: workload_pb2.X509SVIDResponse | None = await stream.recv_message()
        assert msg is not None
        await stream.cancel()
        return msg


@pytest.mark.parametrize("metadata", [None, {"workload.spiffe.io": "True"}, [("workload.spiffe.io", "true")] * 2])
async def test_missing_or_bad_header_is_invalid_argument_before_attestation_we06(metadata: Any) -> None:
    async with client(FakeSource(FULL)) as (stub, att):
        with pytest.raises(GRPCError) as err:
            await first_x509(stub, metadata)
    assert err.value.status is Status.INVALID_ARGUMENT
    assert err.value.message == "security header missing from request"
    assert att.calls == 0


async def test_not_ready_is_unavailable_we13() -> None:
    async with client(FakeSource(ready=False)) as (stub, _):
        with pytest.raises(GRPCError) as err:
            await first_x509(stub)
    assert err.value.status is Status.UNAVAILABLE


async def test_no_identity_is_permission_denied_we14() -> None:
    async with client(FakeSource(WorkloadView((), SpiffeBundle(TD)))) as (stub, _):
        with pytest.raises(GRPCError) as err:
            await first_x509(stub)
    assert (err.value.status, err.value.message) == (Status.PERMISSION_DENIED, "no identity issued")


async def test_all_identities_refused_is_permission_denied() -> None:
    refused = WorkloadView((Identity(ENTRY, None, refused=True),), SpiffeBundle(TD))
    async with client(FakeSource(refused)) as (stub, _):
        with pytest.raises(GRPCError) as err:
            await first_x509(stub)
    assert (err.value.status, err.value.message) == (Status.PERMISSION_DENIED, "no identity issued")


async def test_attestation_failure_is_unauthenticated() -> None:
    async with client(FakeSource(FULL), FakeAttestor(fail=True)) as (stub, _):
        with pytest.raises(GRPCError) as err:
            await first_x509(stub)
    assert err.value.status is Status.UNAUTHENTICATED


async def test_x509_svid_full_state_then_update_wa05() -> None:
    source = FakeSource(FULL)
    async with client(source) as (stub, _), stub.FetchX509SVID.open(metadata=HDR) as stream:
        await stream.send_message(workload_pb2.X509SVIDRequest(), end=True)
        first = await stream.recv_message()
        assert first is not None
        assert [(s.spiffe_id, s.x509_svid, s.x509_svid_key, s.hint) for s in first.svids] == [
            (str(SID), b"\x30\x01\x30\x02", b"KEY", "web")
        ]
        assert list(first.crl) == [b"\x30\x05"]
        other = IssuedSvid("e1", SID, (b"\x30\x03",), b"KEY2", NOW, NOW + timedelta(hours=2))
        source.views.put_nowait(FULL)  # unchanged: must not be re-sent
        source.views.put_nowait(WorkloadView((Identity(ENTRY, other),), SpiffeBundle(TD)))
        second = await stream.recv_message()
        assert second is not None
        assert second.svids[0].x509_svid == b"\x30\x03"
        await stream.cancel()


async def test_x509_bundles_keyed_by_trust_domain_id_wa17() -> None:
    async with client(FakeSource(FULL)) as (stub, _), stub.FetchX509Bundles.open(metadata=HDR) as stream:
        await stream.send_message(workload_pb2.X509BundlesRequest(), end=True)
        msg = await stream.recv_message()
        assert msg is not None
        assert list(msg.bundles) == ["spiffe://example.org"]
        await stream.cancel()


async def test_jwt_svid_requires_audience_wa19() -> None:
    async with client(FakeSource(FULL)) as (stub, _):
        with pytest.raises(GRPCError) as err:
            await stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(), metadata=HDR)
    assert (err.value.status, err.value.message) == (Status.INVALID_ARGUMENT, "audience must be specified")


async def test_jwt_svid_returns_tokens_and_passes_spiffe_id_wa20() -> None:
    source = FakeSource(FULL)
    async with client(source) as (stub, _):
        resp = await stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=["a", "a", "b"]), metadata=HDR)
        with pytest.raises(GRPCError) as err:
            req = workload_pb2.JWTSVIDRequest(audience=["a"], spiffe_id="spiffe://example.org/other")
            await stub.FetchJWTSVID(req, metadata=HDR)
    assert [(s.spiffe_id, s.svid, s.hint) for s in resp.svids] == [(str(SID), "tok", "web")]
    assert source.jwt_calls[0] == (["a", "b"], None)
    assert err.value.status is Status.PERMISSION_DENIED


async def test_jwt_svid_bad_spiffe_id_is_invalid_argument() -> None:
    async with client(FakeSource(FULL)) as (stub, _):
        with pytest.raises(GRPCError) as err:
            await stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=["a"], spiffe_id="nope"), metadata=HDR)
    assert err.value.status is Status.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("audience", "svid", "message"),
    [("", "good", "audience must be specified"), ("a", "", "svid must be specified")],
)
async def test_validate_requires_fields_wa26(audience: str, svid: str, message: str) -> None:
    async with client(FakeSource(FULL)) as (stub, _):
        with pytest.raises(GRPCError) as err:
            await stub.ValidateJWTSVID(workload_pb2.ValidateJWTSVIDRequest(audience=audience, svid=svid), metadata=HDR)
    assert (err.value.status, err.value.message) == (Status.INVALID_ARGUMENT, message)


async def test_validate_returns_claims_struct_wa25() -> None:
    async with client(FakeSource(FULL)) as (stub, _):
        req = workload_pb2.ValidateJWTSVIDRequest(audience="a", svid="good")
        resp = await stub.ValidateJWTSVID(req, metadata=HDR)
        with pytest.raises(GRPCError) as err:
            await stub.ValidateJWTSVID(workload_pb2.ValidateJWTSVIDRequest(audience="a", svid="bad"), metadata=HDR)
    assert resp.spiffe_id == str(SID)
    assert resp.claims["sub"] == str(SID)
    assert list(resp.claims["aud"]) == ["a"]
    assert err.value.status is Status.INVALID_ARGUMENT


@pytest.mark.parametrize("method", ["FetchWITSVID", "FetchWITBundles"])
async def test_wit_is_unimplemented_wa28(method: str) -> None:
    req = workload_pb2.WITSVIDRequest() if method == "FetchWITSVID" else workload_pb2.WITBundlesRequest()
    async with client(FakeSource(FULL)) as (stub, _):
        with pytest.raises(GRPCError) as err:
            await getattr(stub, method)(req, metadata=HDR)
    assert err.value.status is Status.UNIMPLEMENTED


STATE_SECRET = "state file /var/lib/spiffe-py-agent/agent.key: bad padding 0x5ec2e7"


class BrokenSource(FakeSource):
    """A source whose stored state is unreadable: every read fails with a message naming a secret file."""

    def view(self, selectors: frozenset[Selector], process: object = None) -> WorkloadView:
        raise StorageError(STATE_SECRET)

    @contextlib.asynccontextmanager
    async def subscribe(self, selectors: frozenset[Selector], process: object = None,
                        svids: bool = False) -> AsyncIterator[FakeSub]:
        raise StorageError(STATE_SECRET)
        yield FakeSub(self)  # pragma: no cover


async def _call(stub: SpiffeWorkloadAPIStub, method: str) -> Any:
    if method == "FetchJWTSVID":
        return await stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=["a"]), metadata=HDR)
    if method == "ValidateJWTSVID":
        return await stub.ValidateJWTSVID(workload_pb2.ValidateJWTSVIDRequest(audience="a", svid="good"), metadata=HDR)
    request = {"FetchX509SVID": workload_pb2.X509SVIDRequest(), "FetchX509Bundles": workload_pb2.X509BundlesRequest(),
               "FetchJWTBundles": workload_pb2.JWTBundlesRequest()}[method]
    async with getattr(stub, method).open(metadata=HDR) as stream:
        await stream.send_message(request, end=True)
        return await stream.recv_message()


@pytest.mark.parametrize("method", ["FetchX509SVID", "FetchX509Bundles", "FetchJWTBundles", "FetchJWTSVID",
                                    "ValidateJWTSVID"])
async def test_agent_fault_is_internal_without_its_text_on_every_method(method: str) -> None:
    async with client(BrokenSource(FULL)) as (stub, _):
        with pytest.raises(GRPCError) as err:
            await _call(stub, method)
    assert (err.value.status, err.value.message) == (Status.INTERNAL, "internal error")
    assert STATE_SECRET not in str(err.value.message) and STATE_SECRET not in str(err.value.details)

"""A workload attestor added through the registry alone: one class and one register() call.

The toy attestor below is registered on the agent's default registry, configured by its own
``[attestor.toy]`` table, and its selectors decide a real FetchJWTSVID over a real socket
through the agent's accept hook, caller attestor and handler.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_agent.app import CallerAcceptor, build_attestors
from spiffe_agent.attest.base import CallerAttestor
from spiffe_agent.attest.caller import Caller, ConnectionLimit
from spiffe_agent.attest.procfs import LinuxProcFs, ProcFs
from spiffe_agent.attest.registry import default_registry
from spiffe_agent.config import AgentConfig
from spiffe_agent.errors import AgentConfigError, NoIdentityIssuedError
from spiffe_agent.manager.cache import Entry, JwtToken
from spiffe_agent.workloadapi.coalesce import CoalescingServer
from spiffe_agent.workloadapi.handler import WorkloadApiHandler
from spiffe_agent.workloadapi.source import ManagerSource
from spiffe_py._proto import workload_pb2
from spiffe_py._proto.workload_grpc import SpiffeWorkloadAPIStub
from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import SpiffeId
from tests.unit.agent.test_agent_handler import NOW, FakeValidator

TOY_ID = SpiffeId.parse("spiffe://example.org/toy")


class ToyAttestor:
    """``toy:pid-parity:<even|odd>`` with a configurable selector type."""

    def __init__(self, kind: str) -> None:
        self.name = kind
        self._kind = kind

    async def attest(self, caller: Caller) -> frozenset[Selector]:
        return frozenset({Selector(self._kind, f"pid-parity:{'even' if caller.pid % 2 == 0 else 'odd'}")})


def toy_factory(table: Mapping[str, Any], procfs: ProcFs) -> ToyAttestor:
    return ToyAttestor(str(table.get("selector_type", "toy")))


class ToyEntries:
    """A manager with one entry for the toy selector of either parity."""

    def jwt_entries(self, selectors: frozenset[Selector], spiffe_id: SpiffeId | None = None,
                    process: object = None) -> list[Entry]:
        wanted = {Selector("toyish", "pid-parity:even"), Selector("toyish", "pid-parity:odd")}
        if not selectors & wanted:
            raise NoIdentityIssuedError("no identity issued")
        return [Entry(id="toy", spiffe_id=TOY_ID, selectors=frozenset(selectors & wanted))]

    async def jwt_svids(self, entries: Sequence[Entry], audience: Sequence[str],
                        process: object = None) -> list[tuple[Entry, JwtToken]]:
        return [(e, JwtToken("tok", e.spiffe_id, tuple(audience), NOW, NOW)) for e in entries]


async def _fetch(tmp_path: Path, cfg: AgentConfig) -> workload_pb2.JWTSVIDResponse:
    registry = default_registry()
    registry.register("toy", toy_factory)  # the one registry call
    procfs = LinuxProcFs()
    handler = WorkloadApiHandler(attestor=CallerAttestor(build_attestors(cfg, procfs, registry)),
                                 source=ManagerSource(ToyEntries()), validator=FakeValidator())  # type: ignore[arg-type]
    server = CoalescingServer([handler], accept=CallerAcceptor(procfs, ConnectionLimit(8)))
    path = str(tmp_path / "api.sock")
    await server.start(path=path)
    channel = Channel(path=path)
    try:
        reply: workload_pb2.JWTSVIDResponse = await SpiffeWorkloadAPIStub(channel).FetchJWTSVID(
            workload_pb2.JWTSVIDRequest(audience=["a"]), metadata={"workload.spiffe.io": "true"})
        return reply
    finally:
        channel.close()
        server.close()
        await server.wait_closed()


async def test_a_toy_attestor_registered_alone_decides_a_real_call(tmp_path: Path) -> None:
    cfg = AgentConfig(trust_domain="example.org", workload_attestors=("toy",),
                      attestor={"toy": {"selector_type": "toyish"}})
    reply = await _fetch(tmp_path, cfg)
    assert [s.spiffe_id for s in reply.svids] == [str(TOY_ID)]


async def test_without_its_config_table_the_toy_selectors_match_nothing(tmp_path: Path) -> None:
    """The table reached the plugin: without it the selector type differs and no entry matches."""
    cfg = AgentConfig(trust_domain="example.org", workload_attestors=("toy",))
    with pytest.raises(GRPCError) as err:
        await _fetch(tmp_path, cfg)
    assert err.value.status is Status.PERMISSION_DENIED


def test_unknown_attestors_and_unknown_table_keys_are_config_errors() -> None:
    registry = default_registry()
    with pytest.raises(AgentConfigError, match="workload_attestors must be among"):
        registry.build(["nope"], {}, LinuxProcFs())
    with pytest.raises(AgentConfigError, match="unknown keys for the unix attestor"):
        registry.build(["unix"], {"unix": {"discover": True}}, LinuxProcFs())
    with pytest.raises(ValueError, match="already registered"):
        registry.register("unix", toy_factory)

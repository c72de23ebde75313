"""Composition root of the agent: build objects from config, serve the Workload API socket.

::

    await run_agent(load_config(Path("agent.toml"), {}))

The socket is world-connectable (0777) inside a 0755 directory owned by the
agent's user; anything else (a group/world-writable or foreign-owned directory)
is refused because another user could swap the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import signal
import stat
from pathlib import Path

from cryptography import x509
from prometheus_client import start_http_server

from agent.attest.base import WorkloadAttestor
from agent.attest.caller import CallerAttestor, HeldProcess
from agent.attest.docker import DockerAttestor, DockerEngineApi, socket_path_from_docker_host
from agent.attest.procfs import LinuxProcFs
from agent.attest.unix import CachedUserDb, SystemUserDb, UnixAttestor
from agent.audit import AgentAudit
from agent.config import AgentConfig
from agent.errors import AgentConfigError, WorkloadAttestationError
from agent.guard import WorkloadGuard
from agent.manager.process_binding import ProcessKey
from agent.manager.sync import Manager, ManagerConfig
from agent.workloadapi.coalesce import CoalescingServer, connection_of
from agent.workloadapi.handler import WorkloadApiHandler
from agent.workloadapi.jwt import JwtSvidValidator
from spiffe_py import _pem
from spiffe_py._peercred import PeerCred, peer_cred
from spiffe_py.clock import SystemClock

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 5.0


def build_attestors(cfg: AgentConfig, procfs: LinuxProcFs) -> list[WorkloadAttestor]:
    """The configured workload attestors."""
    out: list[WorkloadAttestor] = []
    for name in cfg.workload_attestors:
        if name == "unix":
            out.append(
                UnixAttestor(
                    procfs,
                    CachedUserDb(SystemUserDb()),
                    discover_workload_path=cfg.discover_workload_path,
                    workload_size_limit=cfg.workload_size_limit,
                )
            )
        elif name == "docker":
            host = cfg.docker_host or os.environ.get("DOCKER_HOST")
            out.append(DockerAttestor(procfs, DockerEngineApi(socket_path_from_docker_host(host))))
    return out


def manager_config(cfg: AgentConfig) -> ManagerConfig:
    """ManagerConfig from AgentConfig (reads the bootstrap bundle file)."""
    bundle: tuple[x509.Certificate, ...] = ()
    if cfg.trust_bundle:
        try:
            bundle = tuple(_pem.certificates_from_any(Path(cfg.trust_bundle).read_bytes()))
        except (OSError, ValueError) as err:
            raise AgentConfigError(f"config: cannot load trust_bundle {cfg.trust_bundle!r}") from err
    return ManagerConfig(
        trust_domain=cfg.td(),
        server_host=cfg.server_address,
        server_port=cfg.server_port,
        data_dir=Path(cfg.data_dir),
        join_token=cfg.join_token,
        bootstrap_bundle=bundle,
        insecure_bootstrap=cfg.insecure_bootstrap,
        resync_interval=cfg.resync_interval,
        max_x509_svids=cfg.max_x509_svids,
    )


def prepare_socket_dir(socket_path: Path) -> None:
    """Create the socket's directory 0755 and refuse unsafe existing ones; remove a stale socket."""
    directory = socket_path.parent
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    st = directory.stat()
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise AgentConfigError(
            f"agent: socket directory must be ours and not group/world-writable: {str(directory)!r}"
        )
    os.chmod(directory, 0o755)  # noqa: S103 - everyone must reach the socket; only we may write here
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.lstat(socket_path).st_mode):
            raise AgentConfigError(f"agent: socket_path exists and is not a socket: {str(socket_path)!r}")
        _remove_socket(socket_path)


def build_guard(cfg: AgentConfig, manager: Manager, audit: AgentAudit, clock: SystemClock) -> WorkloadGuard:
    """The Workload API guard (policy, rate limits, anomalies, quarantine through the server)."""

    async def quarantine(entry_id: str, reason: str) -> int:
        return await manager.server_client().quarantine_own(entry_id, reason)

    return WorkloadGuard(cfg.guard_settings(), audit=audit, clock=clock, quarantine=quarantine,
                         entries=manager.cache.entries)


def build_caller_attestor(cfg: AgentConfig, procfs: LinuxProcFs) -> CallerAttestor:
    """The PID-reuse-checked attestor; ids are re-read afterwards only when exe selectors are in play."""
    # a setuid exec during attestation changes ids and exe but neither pid nor start time
    return CallerAttestor(procfs, build_attestors(cfg, procfs), recheck_ids=cfg.discover_workload_path)


# the connection's held caller, from ConnectionCallers.credentials to .process_of in one request task
_HELD: contextvars.ContextVar[HeldProcess | None] = contextvars.ContextVar("agent_held_caller", default=None)


class ConnectionCallers:
    """The handler's ``credentials`` and ``process_of``, reading what is fixed per connection once.

    SO_PEERCRED is frozen when the client connects, so it is read on the first call of a
    connection, and the caller's process is held for the connection (``CallerAttestor.hold``:
    pidfd + start time), released when the connection is lost. Every call still pins and attests
    (a status read, the pidfd poll; see agent.attest.caller). If the connecting process is
    already gone at the first call, every call on that connection fails: its pid is never
    looked up again, since another process may own it by now. Streams not served by
    :class:`CoalescingServer` fall back to per-call reads.
    """

    def __init__(self, caller: CallerAttestor) -> None:
        self._caller = caller

    def credentials(self, stream: object) -> PeerCred:
        """The peer's credentials (per connection); WorkloadAttestationError if its process is gone."""
        conn = connection_of(stream)
        if conn is None:
            _HELD.set(None)
            return peer_cred(stream)
        known: tuple[PeerCred, HeldProcess | None] | None = conn.state.get(self)
        if known is None:
            cred = peer_cred(stream)
            try:
                held: HeldProcess | None = self._caller.hold(cred.pid)
            except WorkloadAttestationError:
                held = None
            if held is not None:
                conn.on_lost(held.close)
            known = conn.state[self] = (cred, held)
        cred, held = known
        if held is None:
            raise WorkloadAttestationError(f"attest: caller pid {cred.pid!r} is gone")
        _HELD.set(held)
        return cred

    def process_of(self, cred: PeerCred) -> ProcessKey | None:
        """Pin this call's facts with the connection's held process; the key of that process."""
        held, _ = _HELD.get(), _HELD.set(None)
        facts = self._caller.pin(cred, held)
        if facts is None:
            if held is not None:  # never fall back to a fresh lookup of a pid that may have been reused
                raise WorkloadAttestationError(f"attest: cannot read the status of caller pid {cred.pid!r}")
            return None
        return ProcessKey(facts.pid, facts.start_time)


async def run_agent(cfg: AgentConfig) -> None:
    """Serve the Workload API until cancelled; pending audit records are fsynced on the way out."""
    cfg.validate()
    audit = AgentAudit.open(Path(cfg.data_dir), fsync=cfg.audit_fsync, flush_interval=cfg.audit_flush_interval,
                            max_file_bytes=cfg.audit_max_file_bytes, max_files=cfg.audit_max_files)
    try:
        await _serve_with(cfg, audit)
    finally:
        audit.close()


async def _serve_with(cfg: AgentConfig, audit: AgentAudit) -> None:
    clock = SystemClock()
    manager = Manager(manager_config(cfg), clock=clock, audit=audit)
    procfs = LinuxProcFs()
    guard = build_guard(cfg, manager, audit, clock)
    caller = build_caller_attestor(cfg, procfs)
    callers = ConnectionCallers(caller)
    handler = WorkloadApiHandler(
        attestor=caller,
        source=manager,
        validator=JwtSvidValidator(clock),
        guard=guard,
        credentials=callers.credentials,
        process_of=callers.process_of,
    )
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port, addr=cfg.metrics_address)
    socket_path = Path(cfg.socket_path)
    prepare_socket_dir(socket_path)
    server = CoalescingServer([handler])  # one send() per response instead of three
    # serve before attesting so callers get UNAVAILABLE rather than a missing socket (WE-13)
    await server.start(path=str(socket_path))
    os.chmod(socket_path, 0o777)  # noqa: S103 - any local workload may connect (WE-12); attestation decides
    log.info("workload api listening on %s", socket_path)
    loop = asyncio.get_running_loop()
    background = [loop.create_task(audit.forward_forever(manager.server_client)),
                  loop.create_task(guard.watch_policy())]
    try:
        await manager.start()
        await manager.run()
    finally:
        for task in background:
            task.cancel()
        # let them finish unwinding (a forward in flight, its position file) before the audit log closes
        await asyncio.wait(background, timeout=SHUTDOWN_GRACE)
        server.close()
        # open Workload API streams never end on their own; do not wait for them forever
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), SHUTDOWN_GRACE)
        _remove_socket(socket_path)


async def serve(cfg: AgentConfig) -> None:
    """Run the agent until SIGTERM or SIGINT, then shut down cleanly."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await run_agent(cfg)
    log.info("agent stopped")


def _remove_socket(socket_path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()

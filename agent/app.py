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
import logging
import os
import resource
import signal
import stat
from pathlib import Path

from cryptography import x509
from prometheus_client import start_http_server

from agent.attest.base import CallerAttestor, WorkloadAttestor
from agent.attest.caller import Caller, ConnectionLimit, capture
from agent.attest.procfs import LinuxProcFs, ProcFs, boot_ticks
from agent.attest.registry import AttestorRegistry, default_registry
from agent.audit import AgentAudit
from agent.config import AgentConfig
from agent.errors import AgentConfigError, WorkloadAttestationError
from agent.guard import WorkloadGuard
from agent.manager.sync import Manager, ManagerConfig
from agent.workloadapi.coalesce import CoalescingServer, CoalescingTransport
from agent.workloadapi.handler import WorkloadApiHandler
from agent.workloadapi.jwt import JwtSvidValidator
from agent.workloadapi.source import GuardedSource, ManagerSource
from spiffe_py import _pem
from spiffe_py._peercred import peer_cred_from_socket
from spiffe_py.clock import SystemClock
from spiffe_py.errors import SpiffeError

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 5.0


def build_attestors(cfg: AgentConfig, procfs: ProcFs,
                    registry: AttestorRegistry | None = None) -> list[WorkloadAttestor]:
    """The configured workload attestors, each built by its registry entry from its own table."""
    return (registry or default_registry()).build(cfg.workload_attestors, cfg.attestor_tables(), procfs)


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


class CallerAcceptor:
    """The Workload API server's accept hook: the connection's :class:`Caller`, or why it is refused.

    Per uid at most ``ConnectionLimit.per_uid`` connections hold a caller (pidfd + status fd);
    further ones hold only their socket and every call on them is refused. The caller and its
    place under the limit are released when the connection is lost.
    """

    def __init__(self, procfs: ProcFs, limit: ConnectionLimit) -> None:
        self._procfs = procfs
        self._limit = limit

    def __call__(self, conn: CoalescingTransport) -> Caller | SpiffeError:
        accepted_at = boot_ticks()  # first: a process started after this is not the one that connected
        try:
            cred = peer_cred_from_socket(conn.get_extra_info("socket"))
            self._limit.admit(cred.uid)
        except SpiffeError as err:
            return err
        except OSError as err:  # the peer is already gone (ENOTCONN and the like)
            return WorkloadAttestationError(f"attest: cannot read the caller's credentials: {err.strerror}")
        conn.on_lost(lambda: self._limit.release(cred.uid))
        try:
            caller = capture(conn.get_extra_info("socket"), self._procfs, accepted_at=accepted_at, cred=cred)
        except SpiffeError as err:
            return err
        conn.on_lost(caller.close)
        return caller


def raise_fd_limit() -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit: each connection holds up to 3 fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.info("raised the open-files limit from %d to %d", soft, hard)


async def run_agent(cfg: AgentConfig) -> None:
    """Serve the Workload API until cancelled; pending audit records are fsynced on the way out."""
    cfg.validate()
    audit = AgentAudit.open(Path(cfg.data_dir), fsync=cfg.audit_fsync, flush_interval=cfg.audit_flush_interval)
    try:
        await _serve_with(cfg, audit)
    finally:
        audit.close()


async def _serve_with(cfg: AgentConfig, audit: AgentAudit) -> None:
    raise_fd_limit()
    clock = SystemClock()
    manager = Manager(manager_config(cfg), clock=clock, audit=audit)
    procfs = LinuxProcFs()
    guard = build_guard(cfg, manager, audit, clock)
    handler = WorkloadApiHandler(
        attestor=CallerAttestor(build_attestors(cfg, procfs)),
        source=GuardedSource(ManagerSource(manager), guard),
        validator=JwtSvidValidator(clock),
    )
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port, addr=cfg.metrics_address)
    socket_path = Path(cfg.socket_path)
    prepare_socket_dir(socket_path)
    # one send() per response instead of three; the caller is captured as each connection is accepted
    server = CoalescingServer([handler], accept=CallerAcceptor(procfs, ConnectionLimit(cfg.max_connections_per_uid)),
                              idle_timeout=cfg.connection_idle_timeout)
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

"""Composition root of the agent: build objects from config, serve the Workload API socket.

::

    await run_agent(load_config(Path("agent.toml"), {}))

The socket is world-connectable (0777) inside a 0755 directory owned by the
agent's user; anything else (a group/world-writable or foreign-owned directory,
or such an ancestor: only root and the agent's user may own the path, and only a
root-owned sticky directory like /tmp may be writable by others) is refused
because another user could swap the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import stat
from pathlib import Path

from cryptography import x509
from prometheus_client import start_http_server

from spiffe_agent.attest.base import CallerAttestor, WorkloadAttestor
from spiffe_agent.attest.caller import Caller, ConnectionLimit, capture
from spiffe_agent.attest.procfs import LinuxProcFs, ProcFs, boot_ticks
from spiffe_agent.attest.registry import AttestorRegistry, default_registry
from spiffe_agent.audit import AgentAudit
from spiffe_agent.config import AgentConfig
from spiffe_agent.errors import AgentConfigError, WorkloadAttestationError
from spiffe_agent.guard.decision import WorkloadGuard
from spiffe_agent.health import HealthServer
from spiffe_agent.manager.manager import AgentHealth, Manager, ManagerConfig
from spiffe_agent.metrics import EXPIRY, ExpiryReading
from spiffe_agent.workloadapi.coalesce import CoalescingServer, CoalescingTransport
from spiffe_agent.workloadapi.handler import WorkloadApiHandler
from spiffe_agent.workloadapi.introspection import with_health_and_reflection
from spiffe_agent.workloadapi.jwt import JwtSvidValidator
from spiffe_agent.workloadapi.revocations import RevocationWatchService
from spiffe_agent.workloadapi.source import GuardedSource, ManagerSource
from spiffe_py import _pem
from spiffe_py._peercred import peer_cred_from_socket
from spiffe_py._serving.connections import raise_fd_limit
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
        servers=cfg.server_addresses(),
        data_dir=Path(cfg.data_dir),
        node_attestor=cfg.node_attestor_client(),
        bootstrap_bundle=bundle,
        insecure_bootstrap=cfg.insecure_bootstrap,
        resync_interval=cfg.resync_interval,
        max_x509_svids=cfg.max_x509_svids,
    )


def expiry_reading(health: AgentHealth) -> ExpiryReading:
    """What the expiry gauges show, from the readiness checks."""
    return ExpiryReading(agent_svid_not_after=health.agent_svid_not_after, cached_svids=health.cached_svids,
                         earliest_cached_not_after=health.earliest_cached_not_after,
                         expired_cached_svids=health.expired_cached_svids, ready=health.ready)


def _check_socket_ancestor(directory: Path, child: Path, child_uid: int, euid: int) -> None:
    """Refuse an ancestor of the socket that a user other than root or the agent's could change.

    Such a user could rename or replace the rest of the path and put another socket where
    workloads look for the agent. A group/world-writable directory is accepted only when it is
    root's and sticky (``/tmp``) and its next component (owned by ``child_uid``) is root's or the
    agent's: the sticky bit then keeps others from renaming or removing that component, ``child``.
    """
    try:
        st = os.lstat(directory)
    except OSError as err:
        raise AgentConfigError(f"agent: cannot check socket directory {str(directory)!r}: {err.strerror}") from err
    if st.st_uid not in (0, euid):
        raise AgentConfigError(
            f"agent: unsafe socket directory {str(directory)!r}: owned by uid {st.st_uid}, not root or uid {euid}"
        )
    if stat.S_ISLNK(st.st_mode) or not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return
    if st.st_mode & stat.S_ISVTX and st.st_uid == 0:
        if child_uid in (0, euid):
            return
        raise AgentConfigError(
            f"agent: unsafe socket directory {str(child)!r}: owned by uid {child_uid}, not root or uid {euid}, "
            f"in the shared directory {str(directory)!r}"
        )
    raise AgentConfigError(
        f"agent: unsafe socket directory {str(directory)!r}: writable by other users "
        f"(mode {stat.S_IMODE(st.st_mode):04o}; only a root-owned sticky directory may be)"
    )


def _secure_socket_path(directory: Path, euid: int, *, create: bool) -> None:
    """Check each ancestor of ``directory`` from ``/`` down, creating missing ones 0755 when ``create``.

    A missing directory is created only after its parent passed, so nothing is ever made inside
    a directory another user controls.
    """
    chain = [*reversed(directory.parents), directory]
    for parent, child in itertools.pairwise(chain):
        try:
            child_uid: int | None = os.lstat(child).st_uid
        except FileNotFoundError:
            child_uid = None
        except OSError as err:
            raise AgentConfigError(f"agent: cannot check socket directory {str(child)!r}: {err.strerror}") from err
        _check_socket_ancestor(parent, child, euid if child_uid is None else child_uid, euid)
        if child_uid is None:
            if not create:
                return
            try:
                os.mkdir(child, 0o755)
            except FileExistsError:  # made by someone else meanwhile: checked next, as ancestor or socket dir
                pass
            except OSError as err:
                raise AgentConfigError(f"agent: cannot create socket directory {str(child)!r}: {err.strerror}") from err


def prepare_socket_dir(socket_path: Path) -> None:
    """Create the socket's directory 0755 and refuse unsafe ones; remove a stale socket.

    Every ancestor is checked (:func:`_check_socket_ancestor`), both as written (a symlink must
    sit in a safe directory and be root's or ours) and resolved; the socket's own directory must
    be ours and writable by us alone.
    """
    euid = os.geteuid()
    written = Path(os.path.abspath(socket_path.parent))
    _secure_socket_path(written, euid, create=False)
    directory = Path(os.path.realpath(written))
    _secure_socket_path(directory, euid, create=True)
    st = directory.stat()
    if st.st_uid != euid or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
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
    soft, _ = raise_fd_limit()  # each Workload API connection holds up to 3 fds
    log.info("open file limit: %d", soft)
    clock = SystemClock()
    manager = Manager(manager_config(cfg), clock=clock, audit=audit)
    procfs = LinuxProcFs()
    guard = build_guard(cfg, manager, audit, clock)
    handler = WorkloadApiHandler(
        attestor=CallerAttestor(build_attestors(cfg, procfs)),
        source=GuardedSource(ManagerSource(manager), guard),
        validator=JwtSvidValidator(clock),
    )
    EXPIRY.watch(lambda: expiry_reading(manager.health()))
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port, addr=cfg.metrics_address)
    health_cfg = cfg.health_listener()
    health = HealthServer(health_cfg, manager.health) if health_cfg is not None else None
    if health is not None:
        await health.start()  # /live answers from now on; /ready once attested and synced
    socket_path = Path(cfg.socket_path)
    prepare_socket_dir(socket_path)
    # one send() per response instead of three; the caller is captured as each connection is accepted;
    # oversized requests are refused on their length prefix
    # gRPC health (SERVING when /ready would say ready) and reflection beside the Workload API
    # and the read-only revocation watch: revoked serials and jtis for relying workloads (the broker)
    services = with_health_and_reflection(handler, RevocationWatchService(manager),
                                          ready=lambda: manager.health().ready)
    server = CoalescingServer(services, accept=CallerAcceptor(procfs, ConnectionLimit(cfg.max_connections_per_uid)),
                              idle_timeout=cfg.connection_idle_timeout,
                              max_message_bytes=cfg.workload_api_max_message_bytes)
    # serve before attesting so callers get UNAVAILABLE rather than a missing socket (WE-13)
    # (with a listen backlog a thousand workloads connecting at once fit in: _serving.limits.LISTEN_BACKLOG)
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
        if health is not None:
            health.close()
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

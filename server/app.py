"""Composition root of spiffe-server: build everything from the config and serve until signalled.

::

    cfg = load_config(None, {"trust_domain": "example.org", "data_dir": "/tmp/srv"})
    raise SystemExit(run(cfg))      # SIGTERM / SIGINT shut it down gracefully

The agent API (and the admin API, for admin SVIDs) listens on TCP with TLS presenting the
server's own SVID ``spiffe://<td>/spire/server``; the admin API also listens on the local
Unix socket (directory 0700, socket 0600).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.server import Server

from spiffe_py._policy import PolicyError
from spiffe_py._serving.connections import GuardedServer, raise_fd_limit
from spiffe_py._serving.limits import BoundedServer
from spiffe_py.clock import Clock, SystemClock
from spiffe_py.rotation import should_rotate
from spiffe_server.api.admin_service import AdminService, expire_label_grants
from spiffe_server.api.agent_service import AgentService
from spiffe_server.api.context import ServerContext
from spiffe_server.api.tls import ServerTls
from spiffe_server.ca.keys import DiskKeyManager, KeyType, load_upstream_authority
from spiffe_server.ca.manager import CaConfig, CaManager
from spiffe_server.ca.pool import InlineSigner, ProcessSigningPool, Signer
from spiffe_server.ca.templates import SvidKind, SvidPolicy, X509SvidParams
from spiffe_server.config import ServerConfig
from spiffe_server.datastore import DataStore, open_datastore
from spiffe_server.defaults import JOURNAL_ID_FILE
from spiffe_server.federation.endpoint import BundleEndpoint
from spiffe_server.federation.refresher import Federation, bootstrap_static_bundles, static_relationships
from spiffe_server.health import start_health_listener
from spiffe_server.logging import configure_logging
from spiffe_server.metrics import BUNDLE_SEQUENCE, CA_EXPIRY, start_metrics_listener
from spiffe_server.nodeattest.base import NodeAttestor, PluginHost
from spiffe_server.nodeattest.registry import node_attestor_plugins
from spiffe_server.oidc import OidcProvider
from spiffe_server.revocation import serial_hex

log = logging.getLogger("spiffe_server")

CHANGE_POLL_SECONDS = 1.0  # SQLite: other servers' changes are found by polling the change log
CHANGE_SAFETY_POLL_SECONDS = 30.0  # PostgreSQL: LISTEN/NOTIFY pushes them; the poll is only a safety net
POLICY_POLL_SECONDS = 0.25  # one stat; a tightened policy reaches agents' SVIDs within a second
CRL_CHECK_SECONDS = 60.0
CHANGE_PRUNE_SECONDS = 60.0
LABEL_EXPIRY_SECONDS = 0.5  # a lapsed approval label is gone within half a second
CHANGE_LOG_KEEP = 100_000  # a server further behind than this reloads its entry index


def rotator_interval(ca_ttl: timedelta) -> float:
    """How often the CA rotator ticks: every 10 s, or every second for short-lived test CAs."""
    return 1.0 if ca_ttl < timedelta(minutes=10) else 10.0


def build_attestors(cfg: ServerConfig, store: DataStore) -> dict[str, NodeAttestor]:
    """The node attestors enabled in the config, by attestation type."""
    host = PluginHost(trust_domain=cfg.trust_domain, store=store)
    plugins = node_attestor_plugins()
    built = {name: plugins[name].build(config, host) for name, config in cfg.node_attestors.items()}
    return {name: attestor for name, attestor in built.items() if attestor is not None}




class ServerJournal:
    """This server's CA journal in the datastore, and the journals of the other servers sharing it."""

    def __init__(self, store: DataStore, journal_id: int) -> None:
        self._store = store
        self.journal_id = journal_id

    def load_journal(self) -> bytes | None:
        """This server's journal."""
        return self._store.load_journal(self.journal_id)

    def save_journal(self, data: bytes) -> None:
        """Replace this server's journal (no other server writes it)."""
        self._store.save_journal(data, self.journal_id)

    def peer_journals(self) -> list[bytes]:
        """Every other server's journal."""
        return [data for jid, data in self._store.list_journals().items() if jid != self.journal_id]


def journal_id(data_dir: Path, store: DataStore) -> int:
    """The ID of this server's CA journal, kept in ``<data_dir>/ca-journal-id`` (chosen on first start).

    Each server (each data dir) has its own CA key pair and journal, so servers sharing a
    datastore never overwrite each other's CA state. A data dir whose keys already belong to the
    single journal of older versions (ID 1) keeps it; a new one takes a random ID.
    """
    path = data_dir / JOURNAL_ID_FILE
    with contextlib.suppress(FileNotFoundError):
        return int(path.read_text().strip())
    legacy = store.load_journal(1)
    keys = data_dir / "keys"
    try:
        doc = json.loads(legacy) if legacy is not None else {}
    except ValueError:
        doc = {}  # a corrupt journal is not this data dir's: the CA starts its own
    ours = isinstance(doc, dict) and any(
        (keys / f"{item.get('key_id')}.pem").exists()
        for kind in ("x509", "jwt") for item in doc.get(kind, ()) if isinstance(item, dict))
    chosen = 1 if ours else secrets.randbelow(2**31 - 3) + 2  # the column is a 32-bit INTEGER
    aside = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    aside.write_text(f"{chosen}\n")
    try:
        os.link(aside, path)  # servers sharing a data dir race here: the first one's ID wins
    except FileExistsError:
        return int(path.read_text().strip())
    finally:
        aside.unlink(missing_ok=True)
    return chosen


def build_ca(cfg: ServerConfig, store: DataStore, clock: Clock) -> CaManager:
    """The CA manager, journaled in the datastore, keys on disk under the data dir."""
    upstream = None
    if cfg.upstream_authority is not None:
        upstream = load_upstream_authority(cfg.upstream_authority.cert_file, cfg.upstream_authority.key_file)
    journal = ServerJournal(store, journal_id(cfg.data_dir, store))
    policy = SvidPolicy(x509_svid_ttl=cfg.default_x509_svid_ttl, jwt_svid_ttl=cfg.default_jwt_svid_ttl,
                        jwt_issuer=cfg.jwt_issuer or None)
    endpoint = cfg.federation.bundle_endpoint
    return CaManager(CaConfig(trust_domain=cfg.trust_domain, ca_ttl=cfg.ca_ttl, ca_key_type=KeyType(cfg.ca_key_type),
                              jwt_key_type=KeyType(cfg.jwt_key_type) if cfg.jwt_key_type else None, policy=policy,
                              refresh_hint=endpoint.refresh_hint if endpoint is not None else None),
                     keys=DiskKeyManager(cfg.data_dir / "keys"), journal=journal, clock=clock, upstream=upstream,
                     peers=journal)


def build_signer(cfg: ServerConfig) -> Signer:
    """Worker processes sized to the cores (or ``signing_workers``); 0 signs in this process."""
    if cfg.signing_workers == 0:
        return InlineSigner()
    return ProcessSigningPool(cfg.signing_workers)


class ServerSvid:
    """The server's own X.509-SVID, renewed at half-life and pushed into the TLS context."""

    def __init__(self, ctx: ServerContext, tls: ServerTls) -> None:
        self._ctx = ctx
        self._tls = tls
        self._leaf: x509.Certificate | None = None
        self._roots: tuple[x509.Certificate, ...] = ()

    def refresh(self, *, force: bool = False) -> bool:
        """Re-sign when due (or the bundle roots changed); True if the TLS context was updated."""
        roots = self._ctx.roots()
        now = self._ctx.clock.now()
        due = self._leaf is None or should_rotate(now=now, not_before=self._leaf.not_valid_before_utc,
                                                  not_after=self._leaf.not_valid_after_utc)
        if not (force or due or roots != self._roots):
            return False
        key = ec.generate_private_key(ec.SECP256R1())
        chain = self._ctx.ca.sign_x509_svid(X509SvidParams(spiffe_id=self._ctx.server_id, public_key=key.public_key(),
                                                           kind=SvidKind.SERVER))
        self._tls.update(self._ctx.issued_chain(chain), key, roots)
        self._leaf, self._roots = chain[0], roots
        log.info("server svid renewed", extra={"serial": serial_hex(chain[0].serial_number)})
        return True


async def _every(seconds: float, step: Callable[[], Awaitable[None]], name: str) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await step()
        except Exception:  # a background loop logs and keeps going
            log.exception("%s failed", name)


def _prepare_socket(path: Path) -> None:
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a stale socket from an unclean shutdown


class App:
    """The running server: listeners and background loops."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        cfg.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        clock = SystemClock()
        store = open_datastore(cfg.database_url)
        # CSR verification and signing run in worker processes, one per core, off the event loop.
        self.ctx = ServerContext(config=cfg, store=store, ca=build_ca(cfg, store, clock), clock=clock,
                                 attestors=build_attestors(cfg, store), signer=build_signer(cfg))
        self.tls = ServerTls(cfg.data_dir / "server-svid")
        self.svid = ServerSvid(self.ctx, self.tls)
        opened = time.monotonic()
        self.guard = self.ctx.guard  # load the policy and audit head now; a broken policy stops the start
        log.info("audit chain opened", extra={"seq": self.guard.audit.head[0],
                                              "elapsed_ms": round((time.monotonic() - opened) * 1000)})
        self._servers: list[Server] = []
        self._side: list[asyncio.Server] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.oidc: OidcProvider | None = None
        self.console: Any = None  # server.console.web.Console when [console] is set (aiohttp is an extra)
        self.bundle_endpoint: BundleEndpoint | None = None
        self.federation = Federation(store=store, own=self.ctx.ca.bundle, clock=clock,
                                     static=static_relationships(cfg), call=self.ctx.call,
                                     notify=self.ctx.changes.notify)
        self._unwatch: Callable[[], None] | None = None

    async def start(self) -> None:
        """Open the datastore-backed services on TCP and the Unix socket, start background loops."""
        cfg, ctx = self.cfg, self.ctx
        self.svid.refresh(force=True)
        await ctx.entries.catch_up()  # the entry index is built once, before the first agent connects
        BUNDLE_SEQUENCE.set(ctx.ca.bundle().sequence_number or 0)
        admin = AdminService(ctx, federation=self.federation)
        limits = cfg.serving
        # requests over the limit are refused on their length prefix; TLS, the per-IP cap and the
        # handshake and idle timeouts are the guard's (so no ssl= to start())
        tcp = GuardedServer([(AgentService(ctx), limits.agent_api_max_message_bytes),
                             (admin, limits.admin_api_max_message_bytes)],
                            tls=self.tls.context, connections=limits.connection_limits())
        await tcp.start(cfg.bind_address, cfg.bind_port)
        _prepare_socket(cfg.admin_socket)
        local = BoundedServer([(admin, limits.admin_api_max_message_bytes)])
        umask = os.umask(0o177)  # the socket is born 0600: no window with looser permissions
        try:
            await local.start(path=str(cfg.admin_socket))
        finally:
            os.umask(umask)
        os.chmod(cfg.admin_socket, 0o600)
        self._servers = [tcp, local]
        if cfg.health is not None:
            self._side.append(await start_health_listener(ctx, cfg.health))
        if cfg.metrics is not None:
            CA_EXPIRY.watch(ctx.ca)
            start_metrics_listener(cfg.metrics)
        if cfg.federation.bundle_endpoint is not None:
            svid_dir = cfg.data_dir / "server-svid"  # ServerTls writes the renewed server SVID here

            async def crls() -> tuple[bytes, ...]:
                return tuple((await ctx.revocations.snapshot(ctx)).crls)

            self.bundle_endpoint = BundleEndpoint(cfg.federation.bundle_endpoint, bundle=ctx.ca.bundle, crls=crls,
                                                  svid_files=(svid_dir / "svid.pem", svid_dir / "svid.key"))
            await self.bundle_endpoint.start()
        await ctx.call(bootstrap_static_bundles, cfg, ctx.store)
        await self.federation.start()
        if cfg.oidc is not None:
            o = cfg.oidc
            self.oidc = OidcProvider(issuer=o.issuer, bind_address=o.bind_address, bind_port=o.bind_port,
                                     bundle=ctx.ca.bundle, cert_file=o.cert_file, key_file=o.key_file)
            await self.oidc.start()
        if cfg.console is not None:
            from spiffe_server.console.web import Console  # the [console] extra: aiohttp, Jinja2

            self.console = Console(ctx, admin, cfg.console)
            await self.console.start()
            ctx.console_logins = self.console.logins
        loop = asyncio.get_running_loop()
        # every commit of this server's store wakes the entry feed, and so do other servers' on a
        # shared PostgreSQL (LISTEN/NOTIFY)
        def wake() -> None:
            loop.call_soon_threadsafe(ctx.changes.committed)

        self._unwatch = ctx.store.watch_changes(wake)
        ctx.changes.store_reports_commits = True
        poll = CHANGE_POLL_SECONDS if self._unwatch is None else CHANGE_SAFETY_POLL_SECONDS
        self._tasks = [
            asyncio.create_task(_every(rotator_interval(cfg.ca_ttl), self._rotate, "ca rotation")),
            asyncio.create_task(ctx.entries.run(poll)),  # also picks up other servers' changes
            asyncio.create_task(_every(CRL_CHECK_SECONDS, self._refresh_crls, "crl refresh")),
            asyncio.create_task(_every(CHANGE_PRUNE_SECONDS, self._prune_changes, "change log prune")),
            asyncio.create_task(_every(POLICY_POLL_SECONDS, self._poll_policy, "policy reload")),
            asyncio.create_task(self.guard.audit.checkpoint_forever()),
            asyncio.create_task(_every(LABEL_EXPIRY_SECONDS, self._expire_labels, "label expiry")),
        ]
        retention = cfg.audit_retention
        if retention.max_age is not None or retention.max_records is not None:
            self._tasks.append(asyncio.create_task(self.guard.audit.prune_forever(
                max_age=retention.max_age, max_records=retention.max_records,
                interval=retention.prune_interval.total_seconds())))
        log.info("server started", extra={"trust_domain": cfg.trust_domain.name,
                                           "address": f"{cfg.bind_address}:{cfg.bind_port}",
                                           "socket": str(cfg.admin_socket)})

    async def _rotate(self) -> None:
        changed = await self.ctx.call(self.ctx.ca.tick)
        changed = await self.ctx.call(self.ctx.ca.refresh_peers) or changed  # other servers' new CAs
        if changed:
            BUNDLE_SEQUENCE.set(self.ctx.ca.bundle().sequence_number or 0)
            log.info("trust bundle changed", extra={"sequence": self.ctx.ca.bundle().sequence_number})
            self.ctx.changes.notify_all()
        self.svid.refresh()

    async def _expire_labels(self) -> None:
        await expire_label_grants(self.ctx)

    async def _prune_changes(self) -> None:
        await self.ctx.call(self.ctx.store.prune_changes, keep_last=CHANGE_LOG_KEEP)

    async def _refresh_crls(self) -> None:
        # CRLs are re-signed at half-life even when nothing changes: push the fresh ones.
        if await self.ctx.revocations.refresh(self.ctx):
            self.ctx.changes.notify_all()

    async def _poll_policy(self) -> None:
        # A new policy can shorten the SVIDs agents hold: the woken sync streams re-send the
        # entries whose TTL in force changed, and agents re-mint those.
        if await self.guard.poll_policy():
            self.ctx.changes.notify_all()

    async def stop(self) -> None:
        """Stop accepting, cancel loops, close the datastore."""
        for server in self._servers:
            server.close()
        for side in self._side:
            side.close()
        if self.oidc is not None:
            await self.oidc.close()
        if self.console is not None:
            await self.console.close()
        if self.bundle_endpoint is not None:
            await self.bundle_endpoint.close()
        await self.federation.close()
        if self._unwatch is not None:
            await asyncio.to_thread(self._unwatch)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)
        with contextlib.suppress(FileNotFoundError):
            self.cfg.admin_socket.unlink()
        self.ctx.signer.close()
        self.ctx.store.close()
        log.info("server stopped")


async def serve(cfg: ServerConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    app = App(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    try:
        await stop.wait()
    finally:
        await app.stop()


def run(cfg: ServerConfig) -> int:
    """Entry point for ``spiffe-server run``; returns the exit status."""
    configure_logging(level=cfg.log_level, fmt=cfg.log_format)  # the CA logs its own TTL warnings
    soft, _ = raise_fd_limit()
    log.info("open file limit", extra={"nofile": soft})
    try:
        asyncio.run(serve(cfg))
    except (OSError, PolicyError) as err:
        log.error("cannot start: %s", err)
        return 1
    return 0

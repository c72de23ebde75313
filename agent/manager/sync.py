"""The agent manager: node attestation, server sync, SVID minting and rotation (async shell).

One asyncio task group owns the :class:`WorkloadCache`; Workload API handlers
read views from it and are woken on every change::

    manager = Manager(config, clock=SystemClock())
    await manager.start()                       # load the stored identity or attest with the node attestor
    async with asyncio.TaskGroup() as tg:
        tg.create_task(manager.run())
        ...
    async with manager.subscribe(selectors) as sub:
        view = await sub.next()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from agent.attest.procfs import LinuxProcFs
from agent.errors import (
    AgentConfigError,
    AgentEvictedError,
    NodeAttestationError,
    NoIdentityIssuedError,
    NotReadyError,
)
from agent.manager.cache import DEFAULT_MAX_X509_SVIDS, Entry, JwtToken, SyncUpdate, WorkloadCache, WorkloadView
from agent.manager.client import ServerCallError, ServerClient, server_ssl_context
from agent.manager.convert import (
    ServerResponseError,
    bundle_from_proto,
    issued_svid,
    jws_key_id,
    leaf_spiffe_id,
    load_chain,
    sync_update_from_proto,
)
from agent.manager.process_binding import (
    EXIT_REASON,
    AuditSink,
    ProcessKey,
    ProcessWatcher,
    Released,
    exit_event,
)
from agent.manager.storage import AgentState, clear_state, key_path, load_state, save_state, svid_path
from agent.nodeattest.base import NodeAttestorClient
from spiffe_py._proto.spiffepy.server.v1 import agent_pb2
from spiffe_py.clock import Clock
from spiffe_py.errors import SpiffeError
from spiffe_py.rotation import should_rotate
from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import SpiffeId, TrustDomain

log = logging.getLogger(__name__)

CSR_BATCH = 500  # SPIRE's batch limit
MAX_JWT_BYTES = 64 * 1024
MAX_BACKOFF = 30.0
JITTER = 0.1  # rotate within ±10% of half-life, like SPIRE
SYNC_QUIET = 0.2  # seconds without a sync message that end a burst
MAX_SYNC_BATCH = 10_000
REVOKE_ATTEMPTS = 5  # RevokeOwn retries for an exited bound process (its SVIDs expire anyway)


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    """What the manager needs to reach and trust the server."""

    trust_domain: TrustDomain
    server_host: str
    server_port: int
    data_dir: Path
    node_attestor: NodeAttestorClient | None = None  # None: only a stored identity can be used
    bootstrap_bundle: tuple[x509.Certificate, ...] = ()
    insecure_bootstrap: bool = False
    resync_interval: float = 60.0
    rotation_tick: float = 5.0
    max_x509_svids: int = DEFAULT_MAX_X509_SVIDS

    def __repr__(self) -> str:
        return f"ManagerConfig(trust_domain={self.trust_domain.name!r}, server={self.server_host}:{self.server_port})"


def display_id(spiffe_id: SpiffeId) -> str:
    """An agent ID safe for logs: a join-token agent's ID embeds the token, so it is masked."""
    text = str(spiffe_id)
    head, sep, _ = text.partition("/spire/agent/join_token/")
    return f"{head}{sep}[REDACTED]" if sep else text


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 key."""
    return ec.generate_private_key(ec.SECP256R1())


def build_csr(key: ec.EllipticCurvePrivateKey, spiffe_id: SpiffeId | None = None) -> bytes:
    """DER CSR for ``key``, with the SPIFFE ID as URI SAN when known."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE")])
    )
    if spiffe_id is not None:
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(spiffe_id))])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)


class Subscription:
    """One open Workload API stream's interest in the cache (an async context manager: registered inside it)."""

    def __init__(self, manager: Manager, selectors: frozenset[Selector], process: ProcessKey | None = None) -> None:
        self.selectors = selectors
        self.process = process  # the caller, for --bind-to-process entries
        self._manager = manager
        self._changed = asyncio.Event()
        self._changed.set()  # the first view is due immediately (WA-06)
        self._pinned: list[str] = []

    def notify(self) -> None:
        """Wake the stream."""
        self._changed.set()

    async def next(self) -> WorkloadView:
        """Wait for a change, then return the current view."""
        await self._changed.wait()
        self._changed.clear()
        view = self._manager.view(self.selectors, self.process)
        self._repin([i.entry.id for i in view.identities])
        return view

    def _repin(self, entry_ids: list[str]) -> None:
        self._manager.cache.pin(entry_ids)
        self._manager.cache.unpin(self._pinned)
        self._pinned = entry_ids

    async def __aenter__(self) -> Subscription:
        self._manager._subscribed(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._manager._unsubscribed(self)
        self.close()

    def close(self) -> None:
        """Release pins."""
        self._repin([])


class Manager:
    """Owns the agent identity, the server connection and the workload cache."""

    def __init__(
        self, config: ManagerConfig, *, clock: Clock, rng: random.Random | None = None, audit: AuditSink | None = None
    ) -> None:
        self.config = config
        self._audit = audit  # issue 5: bound-process exits are recorded in the agent's audit trail
        self.cache = WorkloadCache(max_x509_svids=config.max_x509_svids)
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._state: AgentState | None = None
        self._client: ServerClient | None = None
        self._subs: set[Subscription] = set()
        self._mint_kick = asyncio.Event()
        self._sync_messages = 0
        self._trust_changed = False
        self._watcher = ProcessWatcher(self._process_exited, LinuxProcFs())
        self._revocations: set[asyncio.Task[None]] = set()

    # ---- workload-facing -------------------------------------------------
    def view(self, selectors: frozenset[Selector], process: ProcessKey | None = None) -> WorkloadView:
        """Current view for a workload (``process``: the caller, for bound entries); NotReadyError before sync."""
        if not self.cache.ready:
            raise NotReadyError("agent: not synced with the server yet")
        self._expire()
        if process is not None and any(e.bind_to_process for e in self.cache.matching(selectors)):
            self._bind(process)
        return self.cache.view(selectors, process)

    def subscribe(self, selectors: frozenset[Selector], process: ProcessKey | None = None) -> Subscription:
        """Interest in ``selectors`` of the caller ``process`` while ``async with`` it lasts; SVIDs minted first."""
        return Subscription(self, selectors, process)

    def _subscribed(self, sub: Subscription) -> None:
        self._subs.add(sub)
        if not self._minted(sub.selectors):
            self._mint_kick.set()

    def _unsubscribed(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def _minted(self, selectors: frozenset[Selector]) -> bool:
        """True when every identity of ``selectors`` has a shared SVID: the mint loop has nothing new to do.

        Rotation of those SVIDs stays with the mint loop's own timer; bound entries always kick it.
        """
        return self.cache.ready and all(
            not e.bind_to_process and self.cache.has_svid(e.id) for e in self.cache.matching(selectors)
        )

    def jwt_entries(self, selectors: frozenset[Selector], spiffe_id: SpiffeId | None = None,
                    process: ProcessKey | None = None) -> list[Entry]:
        """The entries a JWT-SVID can be minted for: the caller's (only ``spiffe_id``'s), bound ones with a ``process``.

        Raises:
            NotReadyError: before the first sync.
            NoIdentityIssuedError: none.
        """
        if not self.cache.ready:
            raise NotReadyError("agent: not synced with the server yet")
        self._expire()
        with_process = process is not None
        entries = [
            e
            for e in self.cache.matching(selectors)
            if (spiffe_id is None or e.spiffe_id == spiffe_id) and (with_process or not e.bind_to_process)
        ]
        if not entries:
            raise NoIdentityIssuedError("no identity issued")
        return entries

    async def jwt_svids(self, entries: Sequence[Entry], audience: Sequence[str],
                        process: ProcessKey | None = None) -> list[tuple[Entry, JwtToken]]:
        """A JWT-SVID for each of ``entries`` (from :meth:`jwt_entries`) for ``process``, cached until half-life."""
        return [(e, await self._jwt_for(e, audience, process)) for e in entries]

    async def _jwt_for(self, entry: Entry, audience: Sequence[str], process: ProcessKey | None) -> JwtToken:
        if process is None or not entry.bind_to_process:
            return await self._shared_jwt(entry, audience)
        self._bind(process)
        token = self.cache.bound.jwt(process, entry.id, audience, now=self._clock.now())
        if token is None:
            token = await self._new_jwt(entry, audience)
            if not self.cache.bound.put_jwt(process, entry.id, token):
                # the process exited while the token was minted: it must not outlive it
                self._revoke_released(Released(process, (), (token.jti,)))
                raise NoIdentityIssuedError("no identity issued")
        return token

    async def _shared_jwt(self, entry: Entry, audience: Sequence[str]) -> JwtToken:
        cached = self.cache.get_jwt(entry.spiffe_id, audience, now=self._clock.now())
        if cached is not None:
            return cached
        token = await self._new_jwt(entry, audience)
        self.cache.put_jwt(token)
        return token

    async def _new_jwt(self, entry: Entry, audience: Sequence[str]) -> JwtToken:
        resp = await self._require_client().new_jwt(entry.id, audience)
        if not resp.token or len(resp.token) > MAX_JWT_BYTES or resp.expires_at <= resp.issued_at:
            raise ServerResponseError(f"jwt: server sent an unusable jwt-svid for entry {entry.id!r}")
        token = JwtToken(
            token=resp.token,
            spiffe_id=entry.spiffe_id,
            audience=tuple(audience),
            issued_at=datetime.fromtimestamp(resp.issued_at, UTC),
            expires_at=datetime.fromtimestamp(resp.expires_at, UTC),
            jti=resp.jti,
            kid=jws_key_id(resp.token),
        )
        return token

    # ---- bound processes and expiring entries (issue 5) --------------------
    def _bind(self, process: ProcessKey) -> None:
        """Admit ``process`` for bound credentials (TooManyBoundProcessesError past the limit) and watch it."""
        if self.cache.bound.admit(process):
            self._watcher.watch(process)
            self._mint_kick.set()

    def _process_exited(self, process: ProcessKey) -> None:
        released = self.cache.release_process(process)
        log.info(
            "bound process exited; its svids are revoked: pid=%d start_time=%d serials=%s jtis=%s",
            process.pid, process.start_time, ",".join(released.serials) or "-", ",".join(released.jtis) or "-",
        )
        self._record_exit(released)
        self._notify()
        self._revoke_released(released)

    def _record_exit(self, released: Released) -> None:
        if self._audit is None:
            return
        actor = display_id(self._state.spiffe_id) if self._state is not None else "agent"
        try:
            self._audit.append(exit_event(released, now=self._clock.now(), actor=actor))
        except SpiffeError as err:  # the revocation must go ahead even if the audit store fails
            log.error("audit: could not record the exit of pid %d: %s", released.process.pid, err)

    def _revoke_released(self, released: Released) -> None:
        if not (released.serials or released.jtis):
            return
        task = asyncio.create_task(self._revoke_own(released))
        self._revocations.add(task)
        task.add_done_callback(self._revocations.discard)

    async def _revoke_own(self, released: Released) -> None:
        backoff = 1.0
        for _ in range(REVOKE_ATTEMPTS):
            try:
                count = await self._require_client().revoke_own(released.serials, released.jtis, EXIT_REASON)
            except (ServerCallError, NotReadyError) as err:
                log.warning("revoking svids of exited pid %d failed, retrying in %.0fs: %s",
                            released.process.pid, backoff, err)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            log.info("server revoked %d svids of exited pid=%d (reason %r)", count, released.process.pid, EXIT_REASON)
            return
        log.error("gave up revoking svids of exited pid %d; they expire on their own", released.process.pid)

    def _expire(self) -> None:
        """Drop entries whose task ended (--expires-at / --max-lifetime) and wake their streams."""
        if self.cache.drop_expired(now=self._clock.now()):
            self._notify()

    def _mint_wait(self) -> float:
        """Seconds until the mint loop must look again: the rotation tick, or sooner if an entry expires."""
        end = self.cache.next_expiry()
        if not end:
            return self.config.rotation_tick
        return max(0.0, min(self.config.rotation_tick, end - self._clock.now().timestamp()))

    def _notify(self) -> None:
        for sub in self._subs:
            sub.notify()

    # ---- identity --------------------------------------------------------
    def server_client(self) -> ServerClient:
        """The current connection to the server (NotReadyError before attestation); issue 6 audit/quarantine."""
        return self._require_client()

    def _require_client(self) -> ServerClient:
        if self._client is None:
            raise NotReadyError("agent: not attested yet")
        return self._client

    def _connect(self, state: AgentState) -> None:
        ctx = server_ssl_context(
            state.bundle, client_cert=(svid_path(self.config.data_dir), key_path(self.config.data_dir))
        )
        old, self._client = self._client, ServerClient(
            self.config.server_host, self.config.server_port, self.config.trust_domain, ctx
        )
        if old is not None:
            old.close()  # breaks an open sync stream so it reconnects with the new credentials

    def _adopt(self, state: AgentState) -> None:
        save_state(self.config.data_dir, state)
        self._state = state
        self._connect(state)

    async def start(self) -> None:
        """Load the stored agent identity, or attest (retrying while the server is unreachable)."""
        stored = load_state(self.config.data_dir)
        if stored is not None and stored.not_after > self._clock.now():
            log.info("using stored agent identity %s", display_id(stored.spiffe_id))
            self._state = stored
            self._connect(stored)
            return
        attestor = self.config.node_attestor
        if attestor is None or (stored is not None and not attestor.reusable):
            what = "expired" if stored is not None else "no"
            raise AgentConfigError(f"agent: {what} stored identity and no node attestation evidence that can be used; "
                                   "give a new join token or configure a re-attestable node attestor (x509pop)")
        backoff = 1.0
        while True:
            try:
                await self._attest_and_adopt(attestor, stored)
                return
            except ServerCallError as err:
                if err.status != "UNAVAILABLE":
                    raise
                log.warning("node attestation failed, retrying in %.0fs: %s", backoff, err)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _attest_and_adopt(self, attestor: NodeAttestorClient, previous: AgentState | None) -> None:
        state = await self._attest(attestor, previous)
        self._adopt(state)
        log.info("attested as %s (%s)", display_id(state.spiffe_id), attestor.name)

    async def _attest(self, attestor: NodeAttestorClient, previous: AgentState | None) -> AgentState:
        # Re-attestation trusts the bundle it last had plus the bootstrap bundle; never insecurely.
        anchors = (*(previous.bundle if previous is not None else ()), *self.config.bootstrap_bundle)
        ctx = server_ssl_context(anchors, insecure=previous is None and self.config.insecure_bootstrap)
        client = ServerClient(self.config.server_host, self.config.server_port, self.config.trust_domain, ctx)
        key = new_key()
        try:
            result = await client.attest(attestor, build_csr(key))
        finally:
            client.close()
        chain = self._check_agent_chain(result.svid_chain, key, None)
        bundle = bundle_from_proto(result.bundle)
        if bundle.trust_domain != self.config.trust_domain or not bundle.x509_authorities:
            raise ServerResponseError("attest: server returned a bundle for the wrong trust domain")
        return AgentState(leaf_spiffe_id(chain[0]), chain, key, bundle.x509_authorities, result.can_reattest)

    def _check_agent_chain(
        self, chain_der: Sequence[bytes], key: ec.EllipticCurvePrivateKey, expected: SpiffeId | None
    ) -> tuple[x509.Certificate, ...]:
        chain = load_chain(list(chain_der))
        sid = leaf_spiffe_id(chain[0])
        if chain[0].public_key() != key.public_key():
            raise ServerResponseError("attest: agent svid does not hold our key")
        if not sid.member_of(self.config.trust_domain) or (expected is not None and sid != expected):
            raise ServerResponseError(f"attest: unexpected agent spiffe id: {display_id(sid)!r}")
        return chain

    async def _renew(self, state: AgentState) -> None:
        key = new_key()
        chain_der = await self._require_client().renew(build_csr(key, state.spiffe_id))
        chain = self._check_agent_chain(chain_der, key, state.spiffe_id)
        self._adopt(AgentState(state.spiffe_id, chain, key, state.bundle, state.can_reattest))
        log.info("renewed agent svid, valid until %s", chain[0].not_valid_after_utc)

    # ---- loops -----------------------------------------------------------
    async def run(self) -> None:
        """Run sync, minting and agent rotation until cancelled."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._sync_loop())
                tg.create_task(self._mint_loop())
                tg.create_task(self._rotate_loop())
        except ExceptionGroup as group:
            evicted = [e for e in group.exceptions if isinstance(e, AgentEvictedError)]
            if evicted:
                raise evicted[0] from None
            raise

    def _jitter(self) -> float:
        return self._rng.uniform(-JITTER, JITTER)

    async def _sync_loop(self) -> None:
        backoff = 1.0
        while True:
            if self._trust_changed and self._state is not None:
                # new server trust anchors only apply to new connections
                self._trust_changed = False
                self._connect(self._state)
            self._sync_messages = 0
            try:
                # leaving the stream after resync_interval forces a fresh full state
                await asyncio.wait_for(self._consume_sync(), self.config.resync_interval)
            except TimeoutError:
                pass
            except (ServerCallError, ServerResponseError) as err:
                if isinstance(err, ServerCallError) and err.status == "PERMISSION_DENIED":
                    self._evicted(err)
                if self._sync_messages:
                    backoff = 1.0  # the stream worked (e.g. broken on purpose after a renewal)
                log.warning("sync with server failed, retrying in %.0fs: %s", backoff, err)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = 1.0

    async def _consume_sync(self) -> None:
        queue: asyncio.Queue[SyncUpdate | None] = asyncio.Queue()  # None marks the end of the stream
        reader = asyncio.create_task(self._read_sync(queue))
        try:
            while True:
                batch = [await queue.get()]
                # a paged full sync arrives as a burst: apply the burst as one batch so
                # workloads never see (and SVIDs are never dropped for) a half-applied state.
                # Changes (full=False) are additive and applied at once: a revocation must not wait.
                first = batch[0]
                while first is not None and first.full and batch[-1] is not None and len(batch) < MAX_SYNC_BATCH:
                    try:
                        batch.append(await asyncio.wait_for(queue.get(), SYNC_QUIET))
                    except TimeoutError:
                        break
                self._apply_sync([u for u in batch if u is not None])
                if batch[-1] is None:
                    await reader  # re-raises why the stream ended
                    return
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read_sync(self, queue: asyncio.Queue[SyncUpdate | None]) -> None:
        try:
            async for msg in self._require_client().sync_authorized():
                self._sync_messages += 1
                queue.put_nowait(sync_update_from_proto(msg))
        finally:
            queue.put_nowait(None)

    def _evicted(self, err: ServerCallError) -> None:
        clear_state(self.config.data_dir)
        raise AgentEvictedError("agent: the server refused this agent (evicted or banned); attest again") from err

    def _apply_sync(self, updates: list[SyncUpdate]) -> None:
        if not updates:
            return
        if self.cache.apply_sync(updates):
            self._mint_kick.set()
            self._notify()
        bundles = [u.bundle for u in updates if u.bundle is not None]
        if bundles:
            self._maybe_update_trust(bundles[-1].x509_authorities)

    def _maybe_update_trust(self, authorities: tuple[x509.Certificate, ...]) -> None:
        state = self._state
        if state is None or not authorities or set(authorities) == set(state.bundle):
            return
        new = AgentState(state.spiffe_id, state.chain, state.key, authorities, state.can_reattest)
        save_state(self.config.data_dir, new)
        self._state = new
        self._trust_changed = True  # reconnect with the new anchors when this stream ends

    async def _mint_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._mint_kick.wait(), self._mint_wait())
            self._mint_kick.clear()
            if not self.cache.ready:
                continue
            self._expire()
            now = self._clock.now()
            subscribers = [s.selectors for s in self._subs]
            targets: list[tuple[Entry, ProcessKey | None]] = [
                (e, None) for e in self.cache.svid_targets(subscribers, now=now, jitter=self._jitter())
            ]
            bound = [(s.selectors, s.process) for s in self._subs if s.process is not None]
            targets += self.cache.bound_targets(bound, now=now, jitter=self._jitter())
            try:
                for i in range(0, len(targets), CSR_BATCH):
                    await self._mint(targets[i : i + CSR_BATCH])
            except ServerCallError as err:
                log.warning("minting workload svids failed: %s", err)

    async def _mint(self, targets: list[tuple[Entry, ProcessKey | None]]) -> None:
        """Mint one SVID per target; a bound entry appears once per process, each with its own key."""
        keys = [new_key() for _ in targets]
        params = [
            agent_pb2.NewX509SVIDParams(entry_id=e.id, csr=build_csr(k, e.spiffe_id))
            for (e, _), k in zip(targets, keys, strict=True)
        ]
        results = await self._require_client().batch_new_x509(params)
        # results come back in request order (the same entry may appear for several processes)
        for (entry, process), key, r in zip(targets, keys, results, strict=False):
            if r.entry_id != entry.id:
                continue
            if r.status_code != 0:
                log.warning("server refused svid for entry %s: %s", r.entry_id, r.status_message[:200])
                self.cache.mark_refused(r.entry_id, now=self._clock.now())
                continue
            try:
                svid = issued_svid(entry, list(r.cert_chain), key)
            except SpiffeError as err:
                log.warning("rejected svid for entry %s: %s", r.entry_id, err)
                continue
            if process is None:
                self.cache.put_svid(svid)
            elif not self.cache.bound.put_svid(process, svid):
                # the process exited while its SVID was minted: revoke it rather than leave it valid
                self._revoke_released(Released(process, (f"{svid.serial:x}",), ()))
        self._notify()

    async def _rotate_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.rotation_tick)
            state = self._state
            if state is None:
                continue
            now = self._clock.now()
            if not should_rotate(now=now, not_before=state.not_before, not_after=state.not_after,
                                 jitter=self._jitter()):
                continue
            attestor = self.config.node_attestor
            try:
                if state.not_after <= now and attestor is not None and attestor.reusable and state.can_reattest:
                    # The SVID lapsed (the server was out of reach past its TTL): renewal needs a valid
                    # SVID, re-attestation only the node's evidence.
                    await self._attest_and_adopt(attestor, state)
                else:
                    await self._renew(state)
            except (ServerCallError, ServerResponseError, NodeAttestationError) as err:
                log.warning("agent svid renewal failed: %s", err)

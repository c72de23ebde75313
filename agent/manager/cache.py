"""The agent's workload cache (pure: no I/O, no clock reads).

It holds the authorized entries and bundles from the last sync, the X.509-SVIDs
minted for those entries (LRU-bounded, never evicting one an open stream uses)
and JWT-SVIDs keyed by (SPIFFE ID, sorted audiences)::

    cache = WorkloadCache(max_x509_svids=1000)
    cache.apply_sync([SyncUpdate(full=True, entries=entries, bundle=bundle)])
    view = cache.view(workload_selectors)        # default identity first, hints unique
    todo = cache.svid_targets([workload_selectors], now=now)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from spiffe_agent.errors import AgentError, NotReadyError
from spiffe_agent.manager.process_binding import ProcessKey, Released
from spiffe_py.bundle import SpiffeBundle
from spiffe_py.rotation import half_life, should_rotate
from spiffe_py.selectors import Selector, matches
from spiffe_py.spiffeid import SpiffeId, TrustDomain

DEFAULT_MAX_X509_SVIDS = 1000
DEFAULT_MAX_JWT_SVIDS = 1000
DEFAULT_MAX_BOUND_PROCESSES = 1024
REFUSAL_RETRY = timedelta(seconds=60)
# The server backdates NotBefore by 10 s, so a fresh SVID lives its TTL plus that; a longer one
# was signed under a longer TTL.
TTL_SLACK = timedelta(seconds=15)
MATCHING_MEMO = 4096  # distinct workload selector sets whose matching entries are remembered


@dataclass(frozen=True, slots=True)
class Entry:
    """An authorized registration entry as the agent sees it."""

    id: str
    spiffe_id: SpiffeId
    selectors: frozenset[Selector]
    hint: str = ""
    federates_with: tuple[TrustDomain, ...] = ()
    created_at: int = 0
    revision: int = 0
    x509_svid_ttl: int = 0
    jwt_svid_ttl: int = 0
    dns_names: tuple[str, ...] = ()
    # policy: admin-set labels and the server's quarantine flag, from sync
    labels: Mapping[str, str] = field(default_factory=dict, hash=False, compare=True)
    quarantined: bool = False
    bind_to_process: bool = False  # one key and SVID set per attested process
    expires_at: int = 0  # Unix seconds when the task ends (expires_at/max_lifetime); 0 = never
    # seconds the server signs an X.509-SVID for now (TTL or default, capped by policy); 0 = not said
    x509_ttl_in_force: int = 0

    @property
    def version(self) -> tuple[int, int]:
        """What an SVID minted for this entry was minted against."""
        return self.revision, self.x509_ttl_in_force


@dataclass(frozen=True, slots=True)
class IssuedSvid:
    """An X.509-SVID minted for an entry; the key never leaves agent memory."""

    entry_id: str
    spiffe_id: SpiffeId
    cert_chain: tuple[bytes, ...]  # DER, leaf first
    key_der: bytes  # PKCS#8
    not_before: datetime
    not_after: datetime
    serial: int = 0
    authority_ids: frozenset[str] = frozenset()  # lowercase hex key ids of the issuing CAs
    dns_names: tuple[str, ...] = ()  # the leaf's DNS SANs, in order
    entry_version: tuple[int, int] = (0, 0)  # Entry.version of the entry it was minted for

    def __repr__(self) -> str:
        # keep the private key out of logs and tracebacks
        return f"IssuedSvid(entry_id={self.entry_id!r}, spiffe_id={str(self.spiffe_id)!r}, not_after={self.not_after})"


@dataclass(frozen=True, slots=True)
class JwtToken:
    """A JWT-SVID minted by the server."""

    token: str
    spiffe_id: SpiffeId
    audience: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime
    jti: str = ""
    kid: str = ""  # signing key id from the JWS header

    def __repr__(self) -> str:
        return f"JwtToken(spiffe_id={str(self.spiffe_id)!r}, audience={self.audience!r}, expires_at={self.expires_at})"


@dataclass(frozen=True, slots=True)
class SyncUpdate:
    """One SyncAuthorized message in domain form."""

    full: bool
    full_messages: int = 0  # on a full update: the messages of its snapshot, this one included (0: unknown)
    entries: tuple[Entry, ...] = ()
    removed_entry_ids: tuple[str, ...] = ()
    bundle: SpiffeBundle | None = None
    federated_bundles: tuple[SpiffeBundle, ...] | None = None  # None = unchanged
    revocations: tuple[tuple[str, str], ...] = ()  # (kind "x509"|"jwt", serial hex | jti)
    crls: tuple[bytes, ...] | None = None  # None = unchanged; DER, one per CA
    tainted_authorities: frozenset[str] | None = None  # None = unchanged; lowercase hex key ids
    tainted_jwt_keys: frozenset[str] | None = None  # None = unchanged; JWT key ids


@dataclass(frozen=True, slots=True)
class RevocationState:
    """What the agent knows is revoked now: for relying workloads (the revocation watch)."""

    x509_serials: frozenset[str] = frozenset()  # lowercase hex
    jwt_ids: frozenset[str] = frozenset()
    tainted_x509_authorities: frozenset[str] = frozenset()
    tainted_jwt_keys: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Identity:
    """An entry the workload is entitled to, with its SVID once minted."""

    entry: Entry
    svid: IssuedSvid | None
    refused: bool = False  # the server refused to sign for this entry recently


@dataclass(frozen=True, slots=True)
class WorkloadView:
    """Everything one workload may see, computed from the cache."""

    identities: tuple[Identity, ...]
    bundle: SpiffeBundle | None
    federated: Mapping[TrustDomain, SpiffeBundle] = field(default_factory=dict)
    crls: tuple[bytes, ...] = ()
    revoked_jtis: frozenset[str] = frozenset()  # ValidateJWTSVID refuses these

    @property
    def complete(self) -> bool:
        """True when every identity has an SVID or was refused one (nothing left to wait for)."""
        return all(i.svid is not None or i.refused for i in self.identities)

    def svids(self) -> tuple[tuple[Entry, IssuedSvid], ...]:
        """Identities that have SVIDs, default first."""
        return tuple((i.entry, i.svid) for i in self.identities if i.svid is not None)


def order_identities(entries: Iterable[Entry]) -> list[Entry]:
    """Order by entry id (default identity first, like SPIRE) and keep hints unique (oldest entry wins)."""
    by_id = sorted(entries, key=lambda e: e.id)
    winners: dict[str, Entry] = {}
    for e in sorted(by_id, key=lambda e: (e.created_at, e.id)):
        if e.hint:
            winners.setdefault(e.hint, e)
    return [e for e in by_id if not e.hint or winners[e.hint] is e]


def outdated(entry: Entry, svid: IssuedSvid, *, now: datetime) -> bool:
    """True when ``entry`` changed since ``svid`` was minted so that the SVID must be replaced now.

    That is when its DNS names are stale, or it outlives the X.509 TTL the server signs with now
    (the entry's TTL, or what the policy caps it to after a label or policy change). An SVID minted
    for the entry as it is now is never outdated, whatever the server signed: no re-mint loops.
    """
    if svid.entry_version == entry.version:
        return False
    if svid.dns_names != entry.dns_names:
        return True
    ttl = timedelta(seconds=entry.x509_ttl_in_force or entry.x509_svid_ttl)
    return bool(ttl) and svid.not_after - svid.not_before > ttl + TTL_SLACK and svid.not_after - now > ttl


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


def _jwt_key(spiffe_id: SpiffeId, audience: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    return str(spiffe_id), tuple(sorted(set(audience)))


class WorkloadCache:
    """Entries, bundles and SVIDs; owned by one asyncio task (the manager), so no locks."""

    def __init__(
        self,
        *,
        max_x509_svids: int = DEFAULT_MAX_X509_SVIDS,
        max_jwt_svids: int = DEFAULT_MAX_JWT_SVIDS,
        max_bound_processes: int = DEFAULT_MAX_BOUND_PROCESSES,
    ) -> None:
        if max_x509_svids < 1 or max_jwt_svids < 1:
            raise ValueError("cache: limits must be positive")
        self._max_x509 = max_x509_svids
        self._max_jwt = max_jwt_svids
        self._entries: dict[str, Entry] = {}
        self._bundle: SpiffeBundle | None = None
        self._federated: dict[TrustDomain, SpiffeBundle] = {}
        self._svids: OrderedDict[str, IssuedSvid] = OrderedDict()  # LRU: oldest use first
        self._pins: dict[str, int] = {}
        self._refused: dict[str, datetime] = {}  # entry id -> when the server refused to sign
        # key -> (token, its half-life): the refresh moment is computed once, not per request
        self._jwts: OrderedDict[tuple[str, tuple[str, ...]], tuple[JwtToken, datetime]] = OrderedDict()
        self._ready = False
        self._crls: tuple[bytes, ...] = ()
        self._tainted: frozenset[str] = frozenset()
        self._tainted_jwt: frozenset[str] = frozenset()
        self._revoked: set[tuple[str, str]] = set()
        self.bound = BoundCredentials(max_processes=max_bound_processes)
        self._local_revoked: set[tuple[str, str]] = set()  # RevokeOwn sent, not yet echoed by a full sync
        # per-request view work, recomputed only after the entries / revocations change
        self._matching: dict[frozenset[Selector], tuple[Entry, ...]] = {}
        self._jtis: frozenset[str] | None = None
        self._revocation_state: RevocationState | None = None
        self._soonest: int | None = None  # next_expiry(), None = not computed since the last change

    @property
    def ready(self) -> bool:
        """True once a full sync has been applied."""
        return self._ready

    @property
    def bundle(self) -> SpiffeBundle | None:
        """The own trust domain's bundle."""
        return self._bundle

    def entries(self) -> tuple[Entry, ...]:
        """All authorized entries, by id."""
        return tuple(sorted(self._entries.values(), key=lambda e: e.id))

    def apply_sync(self, updates: Sequence[SyncUpdate]) -> bool:
        """Apply a batch of sync messages (a paged full sync is one batch); True if workloads see a change."""
        before = (dict(self._entries), self._bundle, dict(self._federated), self._crls, len(self._svids))
        for update in updates:
            self._apply_one(update)
        self._entries_changed()
        self._jtis = self._revocation_state = None
        # orphans are dropped once per batch so a full sync spread over pages keeps valid SVIDs
        self._drop_orphans()
        self._drop_revoked()
        return (self._entries, self._bundle, self._federated, self._crls, len(self._svids)) != before

    def _apply_one(self, update: SyncUpdate) -> None:
        if update.full:
            self._entries = {e.id: e for e in update.entries}
            self._revoked = set(self._local_revoked)
            self._local_revoked = set()
            self._ready = True
        else:
            for entry_id in update.removed_entry_ids:
                self._entries.pop(entry_id, None)
            self._entries.update((e.id, e) for e in update.entries)
        if update.bundle is not None:
            self._bundle = update.bundle
        if update.federated_bundles is not None:
            self._federated = {b.trust_domain: b for b in update.federated_bundles}
        if update.crls is not None:
            self._crls = update.crls
        if update.tainted_authorities is not None:
            self._tainted = update.tainted_authorities
        if update.tainted_jwt_keys is not None:
            self._tainted_jwt = update.tainted_jwt_keys
        self._revoked.update(update.revocations)

    def _drop_orphans(self) -> None:
        for entry_id in [i for i in self._svids if self._stale_svid(i)]:
            del self._svids[entry_id]
        for entry_id in [i for i in self._refused if i not in self._entries]:
            del self._refused[entry_id]
        live = {str(e.spiffe_id) for e in self._entries.values()}
        for key in [k for k in self._jwts if k[0] not in live]:
            del self._jwts[key]
        self.bound.drop(
            lambda s: self._entry_changed(s.entry_id, s.spiffe_id),
            lambda entry_id, t: self._entry_changed(entry_id, t.spiffe_id),
        )

    def _entry_changed(self, entry_id: str, spiffe_id: SpiffeId) -> bool:
        entry = self._entries.get(entry_id)
        return entry is None or not entry.bind_to_process or entry.spiffe_id != spiffe_id

    def _drop_revoked(self) -> None:
        # revoked or signed by a tainted authority: drop now, the mint loop re-issues
        revoked_serials = {int(v, 16) for k, v in self._revoked if k == "x509" and _is_hex(v)}

        def svid_gone(svid: IssuedSvid) -> bool:
            return svid.serial in revoked_serials or bool(svid.authority_ids & self._tainted)

        for entry_id, svid in list(self._svids.items()):
            if svid_gone(svid):
                del self._svids[entry_id]
        revoked_jtis = self.revoked_jtis()

        def jwt_gone(token: JwtToken) -> bool:
            return bool(token.jti and token.jti in revoked_jtis) or bool(token.kid and token.kid in self._tainted_jwt)

        for key, (token, _) in list(self._jwts.items()):
            if jwt_gone(token):
                del self._jwts[key]
        self.bound.drop(svid_gone, lambda _entry_id, token: jwt_gone(token))

    def revoked_jtis(self) -> frozenset[str]:
        """JWT ids revoked by the server or by this agent (RevokeOwn)."""
        if self._jtis is None:
            self._jtis = frozenset(v for k, v in self._revoked if k == "jwt")
        return self._jtis

    def revocation_state(self) -> RevocationState:
        """Revoked serials and jtis and the tainted keys, as relying workloads see them (memoised)."""
        if self._revocation_state is None:
            serials = frozenset(v.lower() for k, v in self._revoked if k == "x509" and _is_hex(v))
            self._revocation_state = RevocationState(serials, self.revoked_jtis(), self._tainted, self._tainted_jwt)
        return self._revocation_state

    def release_process(self, proc: ProcessKey) -> Released:
        """Forget an exited process's credentials and treat them as revoked here at once."""
        released = self.bound.release(proc)
        local = {("x509", s) for s in released.serials} | {("jwt", j) for j in released.jtis}
        self._revoked |= local
        self._local_revoked |= local
        self._jtis = self._revocation_state = None
        return released

    def drop_expired(self, *, now: datetime) -> bool:
        """Remove entries whose task has ended (``expires_at``) with all their SVIDs; True if any."""
        soonest = self.next_expiry()
        if not soonest or soonest > now.timestamp():
            return False  # the common case, checked on every request without walking the entries
        ended = [i for i, e in self._entries.items() if 0 < e.expires_at <= now.timestamp()]
        for entry_id in ended:
            del self._entries[entry_id]
        self._entries_changed()
        self._drop_orphans()
        return True

    def next_expiry(self) -> int:
        """The earliest entry ``expires_at`` (Unix seconds), 0 if none expires."""
        if self._soonest is None:
            self._soonest = min((e.expires_at for e in self._entries.values() if e.expires_at), default=0)
        return self._soonest

    def _entries_changed(self) -> None:
        self._matching.clear()
        self._soonest = None

    def _stale_svid(self, entry_id: str) -> bool:
        entry = self._entries.get(entry_id)
        # an entry whose SPIFFE ID changed must not keep serving the old SVID
        return entry is None or entry.spiffe_id != self._svids[entry_id].spiffe_id

    def matching(self, selectors: Iterable[Selector]) -> tuple[Entry, ...]:
        """Entries whose selectors are all among the workload's, ordered with unique hints."""
        workload = frozenset(selectors)
        found = self._matching.get(workload)
        if found is None:
            if len(self._matching) >= MATCHING_MEMO:
                self._matching.clear()  # many distinct workloads: start over rather than grow
            found = tuple(order_identities(e for e in self._entries.values() if matches(e.selectors, workload)))
            self._matching[workload] = found
        return found

    def view(self, selectors: Iterable[Selector], process: ProcessKey | None = None) -> WorkloadView:
        """What a workload with ``selectors`` may see now; marks its SVIDs as recently used.

        Bound entries show only ``process``'s own SVID; without a process they count as refused.
        """
        entries = self.matching(selectors)
        identities = []
        for e in entries:
            if e.bind_to_process:
                svid = None if process is None else self.bound.svid(process, e.id)
                identities.append(Identity(e, svid, refused=process is None or e.id in self._refused))
                continue
            svid = self._svids.get(e.id)
            if svid is not None:
                self._svids.move_to_end(e.id)
            identities.append(Identity(e, svid, refused=e.id in self._refused))
        wanted = {td for e in entries for td in e.federates_with}
        federated = {td: b for td, b in self._federated.items() if td in wanted}
        return WorkloadView(tuple(identities), self._bundle, federated, self._crls, self.revoked_jtis())

    def pin(self, entry_ids: Iterable[str]) -> None:
        """Protect SVIDs from eviction while an open stream uses them."""
        for i in entry_ids:
            self._pins[i] = self._pins.get(i, 0) + 1

    def unpin(self, entry_ids: Iterable[str]) -> None:
        """Release a :meth:`pin`."""
        for i in entry_ids:
            left = self._pins.get(i, 0) - 1
            if left > 0:
                self._pins[i] = left
            else:
                self._pins.pop(i, None)

    def put_svid(self, svid: IssuedSvid) -> None:
        """Store a minted SVID, then evict least recently used unpinned ones over the limit."""
        if svid.entry_id not in self._entries:
            return
        self._svids[svid.entry_id] = svid
        self._svids.move_to_end(svid.entry_id)
        self._refused.pop(svid.entry_id, None)
        if len(self._svids) > self._max_x509:
            self._evict(keep=svid.entry_id)

    def _evict(self, *, keep: str) -> None:
        """Drop the least recently used unpinned SVIDs (never ``keep``) until the limit holds.

        Walks from the oldest only as far as it must (past pinned ones), so a store costs O(1)
        amortised rather than a copy of the whole cache.
        """
        excess = len(self._svids) - self._max_x509
        victims: list[str] = []
        for entry_id in self._svids:
            if len(victims) == excess:
                break
            if entry_id not in self._pins and entry_id != keep:
                victims.append(entry_id)
        for entry_id in victims:
            del self._svids[entry_id]

    def mark_refused(self, entry_id: str, *, now: datetime) -> None:
        """Record that the server refused to sign for ``entry_id``; retried after REFUSAL_RETRY."""
        if entry_id in self._entries:
            self._refused[entry_id] = now

    def svid_count(self) -> int:
        """Number of cached X.509-SVIDs."""
        return len(self._svids)

    def cached_svids(self) -> tuple[IssuedSvid, ...]:
        """Every cached X.509-SVID, shared and bound (for expiry checks and gauges)."""
        return (*self._svids.values(), *self.bound.svids())

    @property
    def max_x509_svids(self) -> int:
        """How many shared X.509-SVIDs are kept (least recently used dropped first) and prefetched."""
        return self._max_x509

    def shared_entry_count(self) -> int:
        """Entries that get a shared X.509-SVID (not bound to a process): over ``max_x509_svids``,
        those beyond the limit are signed on demand when a workload asks for them."""
        return sum(1 for e in self._entries.values() if not e.bind_to_process)

    def has_svid(self, entry_id: str) -> bool:
        """True if an SVID for ``entry_id`` is cached."""
        return entry_id in self._svids

    def svid_targets(
        self, subscribers: Sequence[Iterable[Selector]], *, now: datetime, jitter: float = 0.0
    ) -> list[Entry]:
        """Entries to mint now: missing or past half-life; subscribed ones first, then prefetch within the limit."""
        needed: dict[str, Entry] = {}
        for selectors in subscribers:
            needed.update((e.id, e) for e in self.matching(selectors))
        for e in self.entries():
            if len(needed) >= self._max_x509:
                break
            needed.setdefault(e.id, e)
        # bound entries never get a shared SVID: see bound_targets
        return [e for e in needed.values() if not e.bind_to_process and self._needs_svid(e, now=now, jitter=jitter)]

    def bound_targets(
        self, subscribers: Sequence[tuple[Iterable[Selector], ProcessKey]], *, now: datetime, jitter: float = 0.0
    ) -> list[tuple[Entry, ProcessKey]]:
        """(bound entry, admitted process) pairs whose SVID is missing or past half-life."""
        out: dict[tuple[str, ProcessKey], Entry] = {}
        for selectors, proc in subscribers:
            if not self.bound.admitted(proc):
                continue
            for e in self.matching(selectors):
                if e.bind_to_process and self._due(e, self.bound.svid(proc, e.id), now=now, jitter=jitter):
                    out[(e.id, proc)] = e
        return [(e, proc) for (_, proc), e in out.items()]

    def _needs_svid(self, entry: Entry, *, now: datetime, jitter: float) -> bool:
        return self._due(entry, self._svids.get(entry.id), now=now, jitter=jitter)

    def _due(self, entry: Entry, svid: IssuedSvid | None, *, now: datetime, jitter: float) -> bool:
        refused_at = self._refused.get(entry.id)
        if refused_at is not None and now < refused_at + REFUSAL_RETRY:
            return False
        if svid is None or outdated(entry, svid, now=now):
            return True
        return should_rotate(now=now, not_before=svid.not_before, not_after=svid.not_after, jitter=jitter)

    def get_jwt(self, spiffe_id: SpiffeId, audience: Iterable[str], *, now: datetime) -> JwtToken | None:
        """A cached JWT-SVID still before its half-life, else None."""
        key = _jwt_key(spiffe_id, audience)
        cached = self._jwts.get(key)
        if cached is None or now >= cached[1]:
            return None
        self._jwts.move_to_end(key)
        return cached[0]

    def put_jwt(self, token: JwtToken) -> None:
        """Cache a JWT-SVID (bounded, least recently used dropped first)."""
        key = _jwt_key(token.spiffe_id, token.audience)
        self._jwts[key] = (token, half_life(token.issued_at, token.expires_at))
        self._jwts.move_to_end(key)
        while len(self._jwts) > self._max_jwt:
            self._jwts.popitem(last=False)


class ExpiredSvidError(NotReadyError):
    """An SVID the caller would get has expired (the agent could not renew it): refused, never served."""


def expired_svid_error(view: WorkloadView, *, now: datetime,
                       agent_not_after: datetime | None) -> ExpiredSvidError | None:
    """Why ``view`` must not be served: the first of its SVIDs that expired, or None when all are valid."""
    for entry, svid in view.svids():
        if svid.not_after <= now:
            why = "the agent's own SVID expired at " + _rfc3339(agent_not_after) if (
                agent_not_after is not None and agent_not_after <= now) else "the server could not be reached"
            return ExpiredSvidError(
                f"agent: the X509-SVID of {entry.spiffe_id} expired at {_rfc3339(svid.not_after)} and was not "
                f"renewed ({why}); an expired SVID is never served")
    return None


def _rfc3339(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


class TooManyBoundProcessesError(AgentError):
    """The agent already holds credentials for as many bound processes as it allows."""


_JwtKey = tuple[ProcessKey, str, tuple[str, ...]]


class BoundCredentials:
    """SVIDs and JWT-SVIDs per (process, entry); pure, owned by the manager task.

    Every serial and jti ever minted for a process is remembered until it is
    released, so rotated-out credentials that are still valid get revoked too.
    """

    def __init__(self, *, max_processes: int = DEFAULT_MAX_BOUND_PROCESSES) -> None:
        if max_processes < 1:
            raise ValueError("bound credentials: max_processes must be positive")
        self._max = max_processes
        self._issued: dict[ProcessKey, tuple[set[str], set[str]]] = {}  # serials, jtis
        self._svids: dict[tuple[ProcessKey, str], IssuedSvid] = {}
        self._jwts: dict[_JwtKey, JwtToken] = {}

    def admitted(self, proc: ProcessKey) -> bool:
        """True if ``proc`` was admitted and not yet released."""
        return proc in self._issued

    def admit(self, proc: ProcessKey) -> bool:
        """Admit ``proc``; True if it is new. Raises TooManyBoundProcessesError past the limit."""
        if proc in self._issued:
            return False
        if len(self._issued) >= self._max:
            raise TooManyBoundProcessesError(
                f"agent: too many processes hold bound credentials (max {self._max}); try again when one exits"
            )
        self._issued[proc] = (set(), set())
        return True

    def svids(self) -> tuple[IssuedSvid, ...]:
        """Every process's SVIDs."""
        return tuple(self._svids.values())

    def svid(self, proc: ProcessKey, entry_id: str) -> IssuedSvid | None:
        """The process's SVID for ``entry_id``."""
        return self._svids.get((proc, entry_id))

    def put_svid(self, proc: ProcessKey, svid: IssuedSvid) -> bool:
        """Store an SVID minted for ``proc``; False (not stored) once the process was released."""
        issued = self._issued.get(proc)
        if issued is None:
            return False
        issued[0].add(f"{svid.serial:x}")
        self._svids[(proc, svid.entry_id)] = svid
        return True

    def jwt(self, proc: ProcessKey, entry_id: str, audience: Iterable[str], *, now: datetime) -> JwtToken | None:
        """The process's cached JWT-SVID for ``entry_id`` and ``audience`` while before half-life."""
        token = self._jwts.get((proc, entry_id, tuple(sorted(set(audience)))))
        if token is None or now >= half_life(token.issued_at, token.expires_at):
            return None
        return token

    def put_jwt(self, proc: ProcessKey, entry_id: str, token: JwtToken) -> bool:
        """Store a JWT-SVID minted for ``proc``; False (not stored) once the process was released."""
        issued = self._issued.get(proc)
        if issued is None:
            return False
        if token.jti:
            issued[1].add(token.jti)
        self._jwts[(proc, entry_id, tuple(sorted(set(token.audience))))] = token
        return True

    def release(self, proc: ProcessKey) -> Released:
        """Forget ``proc`` and everything minted for it; returns what must be revoked."""
        serials, jtis = self._issued.pop(proc, (set(), set()))
        for key in [k for k in self._svids if k[0] == proc]:
            del self._svids[key]
        for jkey in [k for k in self._jwts if k[0] == proc]:
            del self._jwts[jkey]
        return Released(proc, tuple(sorted(serials)), tuple(sorted(jtis)))

    def drop(self, svid_gone: Callable[[IssuedSvid], bool], jwt_gone: Callable[[str, JwtToken], bool]) -> None:
        """Drop SVIDs (and ``(entry_id, token)`` JWTs) for which the predicate holds; the mint loop re-issues."""
        for key in [k for k, s in self._svids.items() if svid_gone(s)]:
            del self._svids[key]
        for jkey in [k for k, t in self._jwts.items() if jwt_gone(k[1], t)]:
            del self._jwts[jkey]

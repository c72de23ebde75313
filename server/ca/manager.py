"""The server CA: X.509 CA and JWT key rotation, the trust bundle, and SVID signing (I/O shell).

State lives in a CA journal (JSON; keys referenced by KeyManager id, never included), saved
through a small :class:`CaJournalStore` so the same CA survives restarts::

    ca = CaManager(CaConfig(trust_domain=td), keys=DiskKeyManager(data_dir / "keys"),
                   journal=MemoryJournalStore(), clock=SystemClock())
    ca.tick()                                   # every ~10 s; True when the bundle changed
    chain = ca.sign_x509_svid(X509SvidParams(spiffe_id=sid, public_key=pub))
    token = ca.sign_jwt_svid(JwtSvidParams(spiffe_id=sid, audience=("db",)))
    bundle = ca.bundle()                        # SpiffeBundle with spiffe_sequence
"""

from __future__ import annotations

import enum
import logging
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

from spiffe_py import _json
from spiffe_py._pem import DecodeError, certificates_from_pem, certificates_to_pem
from spiffe_py.bundle import SpiffeBundle
from spiffe_py.clock import Clock
from spiffe_py.spiffeid import TrustDomain
from spiffe_server.ca import slots as sl
from spiffe_server.ca.keys import CaPrivateKey, KeyManager, KeyType, UpstreamAuthority
from spiffe_server.ca.signer import SignedSvid, X509Authority, sign_ca, sign_jwt, sign_x509_svid_der
from spiffe_server.ca.templates import (
    CA_SUBJECT,
    DEFAULT_CA_TTL,
    JwtSvidParams,
    SvidPolicy,
    X509SvidParams,
    build_jwt_claims,
    svid_ttl_warnings,
)
from spiffe_server.errors import CaUnavailableError, NotFoundError

log = logging.getLogger(__name__)

JOURNAL_VERSION = 1
_MAX_JOURNAL_BYTES = 4 * 1024 * 1024
_MAX_ROTATION_STEPS = 4  # prepare + activate at most twice per kind; guards against a logic loop


class AuthorityKind(enum.Enum):
    """The two kinds of authority the CA rotates."""

    X509 = "x509"
    JWT = "jwt"


@dataclass(frozen=True, slots=True)
class JwtKey:
    """A JWT signing key and its ``kid``."""

    kid: str
    key: CaPrivateKey
    not_after: datetime


@dataclass(frozen=True, slots=True)
class CaConfig:
    """CA settings (SPIRE `ca_ttl`, `ca_key_type`, `jwt_key_type`, `ca_subject`, SVID policy)."""

    trust_domain: TrustDomain
    ca_ttl: timedelta = DEFAULT_CA_TTL
    ca_key_type: KeyType = KeyType.EC_P256
    jwt_key_type: KeyType | None = None  # None: same as ca_key_type
    ca_subject: x509.Name = CA_SUBJECT
    policy: SvidPolicy = field(default_factory=SvidPolicy)
    # How long an expired authority stays in the bundle (SPIRE keeps it 24h).
    bundle_prune_grace: timedelta = timedelta(0)
    # spiffe_refresh_hint of the bundle; None: ca_ttl/10 in whole seconds, within 1 s..5 min,
    # so a short-lived test CA is re-fetched well within its life and a day-long one every 5 min.
    refresh_hint: timedelta | None = None

    @property
    def bundle_refresh_hint(self) -> timedelta:
        """The refresh hint every bundle this CA publishes carries."""
        if self.refresh_hint is not None:
            return self.refresh_hint
        seconds = int(self.ca_ttl.total_seconds() // 10)
        return timedelta(seconds=min(max(seconds, 1), 300))

    def __post_init__(self) -> None:
        if self.ca_ttl <= timedelta(0) or self.bundle_prune_grace < timedelta(0):
            raise ValueError("ca: ca_ttl must be positive and bundle_prune_grace not negative")


class CaJournalStore(Protocol):
    """Persists the CA journal (the datastore implements it for HA-safe storage)."""

    def load_journal(self) -> bytes | None:
        """The last saved journal, or None if there is none yet."""
        ...

    def save_journal(self, data: bytes) -> None:
        """Replace the saved journal."""
        ...


class PeerJournals(Protocol):
    """The journals of the other servers' CAs on a shared datastore (their public parts are published)."""

    def peer_journals(self) -> Sequence[bytes]:
        """Every other server's saved journal."""
        ...


class MemoryJournalStore:
    """A journal kept in memory (tests, ephemeral servers)."""

    def __init__(self, data: bytes | None = None) -> None:
        self.data = data

    def load_journal(self) -> bytes | None:
        """The saved journal."""
        return self.data

    def save_journal(self, data: bytes) -> None:
        """Keep ``data``."""
        self.data = data


@dataclass(frozen=True, slots=True)
class _Peers:
    """What the other servers' journals publish: X.509 roots, JWT keys, and their bundle sequences' sum."""

    roots: tuple[x509.Certificate, ...] = ()
    jwt: tuple[tuple[str, Any], ...] = ()
    sequence: int = 0


@dataclass(frozen=True, slots=True)
class _State:
    x509: sl.Slots[X509Authority] = ()
    jwt: sl.Slots[JwtKey] = ()
    sequence: int = 0

    def slots(self, kind: AuthorityKind) -> sl.Slots[Any]:
        return self.x509 if kind is AuthorityKind.X509 else self.jwt

    def with_slots(self, kind: AuthorityKind, slots: sl.Slots[Any]) -> _State:
        return replace(self, x509=slots) if kind is AuthorityKind.X509 else replace(self, jwt=slots)


class CaManager:
    """Owns the rotating authorities; loads its journal and rotates once on construction."""

    def __init__(
        self,
        config: CaConfig,
        *,
        keys: KeyManager,
        journal: CaJournalStore,
        clock: Clock,
        upstream: UpstreamAuthority | None = None,
        peers: PeerJournals | None = None,
    ) -> None:
        self._config = config
        self._peer_source = peers
        self._peers = _Peers()
        self._keys = keys
        self._journal = journal
        self._clock = clock
        self._upstream = upstream
        self._lock = threading.RLock()
        self.warnings = svid_ttl_warnings(config.policy, config.ca_ttl)
        for warning in self.warnings:
            log.warning("%s", warning)
        self._state = self._load()
        # The bundle built for one state (its JWKs and tuples); a commit replaces the state, so an
        # identity check is the whole invalidation. Readers on other threads see old or new, both whole.
        self._bundle_cache: tuple[_State, _Peers, SpiffeBundle] | None = None
        self.rotate(clock.now())
        self.refresh_peers()

    def refresh_peers(self) -> bool:
        """Re-read the other servers' journals; True if what they publish changed (the bundle did too).

        Each server on a shared datastore has its own CA key pair; the bundle every server serves
        holds all their roots and JWT keys, and its sequence is the sum of all servers' sequences
        (each only grows, so the sum does).
        """
        if self._peer_source is None:
            return False
        roots: list[x509.Certificate] = []
        jwt: list[tuple[str, Any]] = []
        sequence = 0
        for data in self._peer_source.peer_journals():
            try:
                doc = _json.load_object(data, max_bytes=_MAX_JOURNAL_BYTES)
                sequence += int(doc["sequence"])
                if self._upstream is None:  # with an upstream authority every server chains to its roots
                    roots.extend(certificates_from_pem(item["chain_pem"].encode())[0] for item in doc["x509"])
                jwt.extend((item["id"], load_pem_public_key(item["public_key_pem"].encode()))
                           for item in doc["jwt"] if "public_key_pem" in item)
            except (KeyError, TypeError, ValueError, DecodeError, _json.JsonError) as err:
                log.warning("ca: a peer server's journal is unreadable; not publishing it: %s",
                            err.__class__.__name__)
        peers = _Peers(tuple(roots), tuple(sorted(jwt, key=lambda kv: kv[0])), sequence)
        if _peer_content(peers) == _peer_content(self._peers):
            return False
        self._peers = peers
        return True

    # -- rotation ---------------------------------------------------------------------------

    def tick(self) -> bool:
        """Rotate at the clock's current time; True if the bundle changed."""
        return self.rotate(self._clock.now())

    def rotate(self, now: datetime) -> bool:
        """Prepare/activate/prune as due at ``now`` (idempotent); True if the bundle changed."""
        with self._lock:
            state = self._state
            for kind in AuthorityKind:
                state = state.with_slots(kind, self._advance(kind, state.slots(kind), now))
                state = state.with_slots(kind, sl.pruned(state.slots(kind), now=now,
                                                         grace=self._config.bundle_prune_grace))
            return self._commit(state)

    def prepare(self, kind: AuthorityKind) -> sl.AuthorityInfo:
        """Force a new prepared authority now (published in the bundle at once)."""
        with self._lock:
            slot = self._new_slot(kind, self._clock.now())
            self._commit(self._state.with_slots(kind, sl.with_prepared(self._state.slots(kind), slot)))
            return slot.info

    def activate(self, kind: AuthorityKind) -> sl.AuthorityInfo:
        """Force the prepared authority to become active."""
        with self._lock:
            slots = sl.with_activated(self._state.slots(kind))
            self._commit(self._state.with_slots(kind, slots))
            return next(s.info for s in slots if s.status is sl.SlotStatus.ACTIVE)

    def taint(self, kind: AuthorityKind, authority_id: str) -> None:
        """Mark an old authority tainted (agents re-sign everything chained to it)."""
        with self._lock:
            self._commit(self._state.with_slots(kind, sl.with_tainted(self._state.slots(kind), authority_id)))

    def revoke(self, kind: AuthorityKind, authority_id: str) -> None:
        """Remove a tainted authority from the bundle and forget its key."""
        with self._lock:
            self._commit(self._state.with_slots(kind, sl.without_revoked(self._state.slots(kind), authority_id)))

    def authorities(self, kind: AuthorityKind) -> tuple[sl.AuthorityInfo, ...]:
        """Public facts about every authority of ``kind`` in the bundle."""
        return tuple(slot.info for slot in self._state.slots(kind))

    # -- signing ----------------------------------------------------------------------------

    @property
    def policy(self) -> SvidPolicy:
        """The SVID policy (default TTLs, subject) every SVID is signed with."""
        return self._config.policy

    def active_x509_ca(self) -> X509Authority:
        """The authority that signs X.509-SVIDs now."""
        return self._active(AuthorityKind.X509, self._state.x509).payload

    def x509_signers(self) -> tuple[X509Authority, ...]:
        """Every X.509 authority still in the bundle, with its key (each signs the CRL of what it issued)."""
        return tuple(slot.payload for slot in self._state.x509)

    def active_jwt_key(self) -> JwtKey:
        """The key that signs JWT-SVIDs now."""
        return self._active(AuthorityKind.JWT, self._state.jwt).payload

    def sign_x509_svid(self, params: X509SvidParams) -> tuple[x509.Certificate, ...]:
        """Sign an X.509-SVID (leaf first, then the CA chain up to, excluding, the bundle root)."""
        return self.sign_x509_svid_der(params).chain

    def sign_x509_svid_der(self, params: X509SvidParams) -> SignedSvid:
        """:meth:`sign_x509_svid`, keeping the leaf's DER as signed (for the wire)."""
        return sign_x509_svid_der(self.active_x509_ca(), params, policy=self._config.policy, now=self._clock.now())

    def sign_jwt_svid(self, params: JwtSvidParams) -> str:
        """Sign a JWT-SVID with the active JWT key."""
        jwt_key = self.active_jwt_key()
        claims = build_jwt_claims(params, policy=self._config.policy, key_expires_at=jwt_key.not_after,
                                  now=self._clock.now())
        return sign_jwt(claims, key=jwt_key.key, kid=jwt_key.kid)

    def bundle(self) -> SpiffeBundle:
        """The trust domain's bundle: every published authority (prepared, active, old); cached per state."""
        state, peers = self._state, self._peers
        cached = self._bundle_cache
        if cached is not None and cached[0] is state and cached[1] is peers:
            return cached[2]
        bundle = self._build_bundle(state, peers)
        self._bundle_cache = (state, peers, bundle)
        return bundle

    # -- internals --------------------------------------------------------------------------

    def _build_bundle(self, state: _State, peers: _Peers) -> SpiffeBundle:
        own = self._x509_roots(state)
        roots = own + tuple(r for r in peers.roots if r not in own)
        jwt = dict(peers.jwt)
        jwt.update({s.authority_id: s.payload.key.public_key() for s in state.jwt})
        return SpiffeBundle(
            trust_domain=self._config.trust_domain,
            x509_authorities=roots,
            jwt_authorities=jwt,
            sequence_number=state.sequence + peers.sequence,
            refresh_hint=self._config.bundle_refresh_hint,
        )

    def _active(self, kind: AuthorityKind, slots: sl.Slots[sl.T]) -> sl.Slot[sl.T]:
        slot = sl.find(slots, sl.SlotStatus.ACTIVE)
        if slot is None or self._clock.now() >= slot.info.not_after:
            raise CaUnavailableError(f"ca: no active {kind.value} authority")
        return slot

    def _advance(self, kind: AuthorityKind, slots: sl.Slots[Any], now: datetime) -> sl.Slots[Any]:
        for _ in range(_MAX_ROTATION_STEPS):
            action = sl.next_action(slots, now=now)
            if action is sl.Action.NONE:
                return slots
            if action is sl.Action.PREPARE:
                slots = sl.with_prepared(slots, self._new_slot(kind, now))
            else:
                slots = sl.with_activated(slots)
            log.info("ca: %s authority %s", kind.value, action.value)
        raise RuntimeError(f"ca: {kind.value} rotation did not settle")

    def _new_slot(self, kind: AuthorityKind, now: datetime) -> sl.Slot[Any]:
        key_id = f"{kind.value}-{secrets.token_hex(8)}"
        if kind is AuthorityKind.X509:
            key = self._keys.generate(key_id, self._config.ca_key_type)
            ca = sign_ca(trust_domain=self._config.trust_domain, key=key, ttl=self._config.ca_ttl, now=now,
                         upstream=self._upstream, subject=self._config.ca_subject)
            return _x509_slot(ca, key_id, sl.SlotStatus.PREPARED, tainted=False)
        key = self._keys.generate(key_id, self._config.jwt_key_type or self._config.ca_key_type)
        jwt_key = JwtKey(kid=secrets.token_urlsafe(24), key=key, not_after=now + self._config.ca_ttl)
        info = sl.AuthorityInfo(jwt_key.kid, sl.SlotStatus.PREPARED, now, jwt_key.not_after)
        return sl.Slot(info, key_id, jwt_key)

    def _x509_roots(self, state: _State) -> tuple[x509.Certificate, ...]:
        if self._upstream is not None:
            return self._upstream.roots
        return tuple(slot.payload.cert for slot in state.x509)

    def _bundle_content(self, state: _State) -> tuple[object, ...]:
        # With an upstream authority our CAs are intermediates: only their taint reaches the bundle.
        return (self._x509_roots(state), tuple(s.authority_id for s in state.x509 if s.info.tainted),
                tuple((s.authority_id, s.info.tainted) for s in state.jwt))

    def _commit(self, state: _State) -> bool:
        """Bump the sequence if the bundle changed, persist, then drop keys of removed slots."""
        old = self._state
        changed = self._bundle_content(state) != self._bundle_content(old)
        if changed:
            state = replace(state, sequence=old.sequence + 1)
        if state == old:
            return False
        self._journal.save_journal(_dump(state))
        self._state = state
        kept = {s.key_id for kind in AuthorityKind for s in state.slots(kind)}
        for gone in {s.key_id for kind in AuthorityKind for s in old.slots(kind)} - kept:
            self._keys.delete(gone)
        return changed

    def _load(self) -> _State:
        data = self._journal.load_journal()
        if data is None:
            return _State()
        try:
            doc = _json.load_object(data, max_bytes=_MAX_JOURNAL_BYTES)
            if doc.get("version") != JOURNAL_VERSION:
                raise ValueError(f"ca: unsupported journal version {doc.get('version')!r}")
            return _State(x509=tuple(self._load_slots(doc["x509"], _x509_from_json)),
                          jwt=tuple(self._load_slots(doc["jwt"], _jwt_from_json)), sequence=int(doc["sequence"]))
        except (KeyError, TypeError, DecodeError, _json.JsonError) as err:
            raise ValueError(f"ca: journal is corrupt: {err.__class__.__name__}") from err

    def _load_slots(self, items: list[dict[str, Any]], parse: _SlotParser) -> list[sl.Slot[Any]]:
        slots = []
        for item in items:
            try:
                key = self._keys.get(item["key_id"])
            except NotFoundError:
                # A lost key cannot sign; drop the slot and let rotation replace it (SPIRE does the same).
                log.warning("ca: journal authority %s has no key; dropping it", item.get("id"))
                continue
            slots.append(parse(item, key))
        return slots


def _x509_slot(ca: X509Authority, key_id: str, status: sl.SlotStatus, *, tainted: bool) -> sl.Slot[X509Authority]:
    info = sl.AuthorityInfo(ca.authority_id, status, ca.cert.not_valid_before_utc, ca.cert.not_valid_after_utc,
                            tainted)
    return sl.Slot(info, key_id, ca)


# -- journal (de)serialisation ------------------------------------------------------------------

class _SlotParser(Protocol):
    def __call__(self, item: dict[str, Any], key: CaPrivateKey) -> sl.Slot[Any]: ...


def _info_json(slot: sl.Slot[Any]) -> dict[str, Any]:
    info = slot.info
    return {"id": info.authority_id, "key_id": slot.key_id, "status": info.status.value, "tainted": info.tainted,
            "not_before": info.not_before.isoformat(), "not_after": info.not_after.isoformat()}


def _dump(state: _State) -> bytes:
    x509_items = [{**_info_json(s), "chain_pem": certificates_to_pem(s.payload.chain).decode()} for s in state.x509]
    # the JWT public key is kept too, so servers sharing the datastore can publish it (never the private key)
    jwt_items = [{**_info_json(s), "public_key_pem": s.payload.key.public_key().public_bytes(
        Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()} for s in state.jwt]
    return _json.dump({"version": JOURNAL_VERSION, "sequence": state.sequence, "x509": x509_items,
                       "jwt": jwt_items})


def _peer_content(peers: _Peers) -> tuple[object, ...]:
    spki = tuple(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) for _, key in peers.jwt)
    return peers.roots, tuple(kid for kid, _ in peers.jwt), spki, peers.sequence


def _x509_from_json(item: dict[str, Any], key: CaPrivateKey) -> sl.Slot[Any]:
    cert, *intermediates = certificates_from_pem(item["chain_pem"].encode())
    ca = X509Authority(cert=cert, key=key, intermediates=tuple(intermediates))
    return _x509_slot(ca, item["key_id"], sl.SlotStatus(item["status"]), tainted=bool(item["tainted"]))


def _jwt_from_json(item: dict[str, Any], key: CaPrivateKey) -> sl.Slot[Any]:
    info = sl.AuthorityInfo(item["id"], sl.SlotStatus(item["status"]), datetime.fromisoformat(item["not_before"]),
                            datetime.fromisoformat(item["not_after"]), bool(item["tainted"]))
    return sl.Slot(info, item["key_id"], JwtKey(kid=info.authority_id, key=key, not_after=info.not_after))

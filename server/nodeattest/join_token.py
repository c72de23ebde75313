"""The join_token node attestor: a single-use, short-lived, server-generated secret (TOFU).

    record = generate_join_token(now=clock.now())          # give record.token to the operator
    attestor = JoinTokenAttestor(td, store)
    result = await attestor.attest(token.encode(), challenge, now=clock.now())
    # result.agent_id == join_token_agent_id(td, token); result.can_reattest is False

The agent ID keeps SPIRE's shape, ``spiffe://<td>/spire/agent/join_token/<ref>``, but ``<ref>``
is the first 32 hex digits (128 bits) of the token's SHA-256, not the token: the ID is shown
by ``entry show`` (as an alias entry's parent) and ``agent list`` while the token may still be
unused, and the token itself is stored only hashed.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_server.errors import AttestationError
from spiffe_server.nodeattest.base import AttestResult, ChallengeFn, PluginConfigError, PluginHost, agent_id

NAME = "join_token"
REF_HEX_DIGITS = 32  # 128 bits of SHA-256: no two tokens share an agent ID
DEFAULT_JOIN_TOKEN_TTL = timedelta(seconds=600)  # SPIRE `token generate -ttl` default
# The token becomes an ID path segment, so keep to the segment alphabet; never echo it back.
_TOKEN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True, slots=True)
class JoinTokenRecord:
    """A stored join token and when it stops being usable."""

    token: str = field(repr=False)  # a secret: keep it out of reprs and logs
    expires_at: datetime


class JoinTokenLike(Protocol):
    """What the attestor needs from a stored token (the datastore's record satisfies it)."""

    @property
    def expires_at(self) -> datetime:
        """When the token stops being usable."""
        ...


class JoinTokenStore(Protocol):
    """Where join tokens live until used."""

    def consume(self, token: str, *, now: datetime) -> JoinTokenLike | None:
        """Atomically delete ``token`` and return its record, or None if it does not exist."""
        ...


class MemoryJoinTokenStore:
    """Join tokens in a dict (tests, single-process servers)."""

    def __init__(self) -> None:
        self._records: dict[str, JoinTokenRecord] = {}

    def add(self, record: JoinTokenRecord) -> None:
        """Store a token."""
        self._records[record.token] = record

    def consume(self, token: str, *, now: datetime) -> JoinTokenRecord | None:
        """Remove and return the token's record."""
        del now  # expiry is the attestor's decision; the store only guarantees single use
        return self._records.pop(token, None)


def join_token_ref(token: str) -> str:
    """The public reference to ``token`` in its agent's ID: a SHA-256 prefix (the token stays secret)."""
    return hashlib.sha256(token.encode()).hexdigest()[:REF_HEX_DIGITS]


def join_token_agent_id(trust_domain: TrustDomain, token: str) -> SpiffeId:
    """The SPIFFE ID an agent attested with ``token`` gets (and alias entries are parented to)."""
    return agent_id(trust_domain, NAME, join_token_ref(token))


def generate_join_token(*, now: datetime, ttl: timedelta = DEFAULT_JOIN_TOKEN_TTL) -> JoinTokenRecord:
    """A fresh random (UUIDv4, 122 random bits) join token valid for ``ttl``."""
    if ttl <= timedelta(0):
        raise ValueError("join_token: ttl must be positive")
    return JoinTokenRecord(token=str(uuid.uuid4()), expires_at=now + ttl)


class JoinTokenAttestor:
    """Attests an agent that presents an unused, unexpired join token."""

    name = NAME

    def __init__(self, trust_domain: TrustDomain, store: JoinTokenStore) -> None:
        self._trust_domain = trust_domain
        self._store = store

    async def attest(self, payload: bytes, challenge: ChallengeFn, *, now: datetime) -> AttestResult:
        """Consume the token in ``payload``; no challenge is sent."""
        del challenge
        try:
            token = payload.decode("ascii")
        except UnicodeDecodeError:
            raise AttestationError(NAME, "join token is malformed") from None
        if not _TOKEN.fullmatch(token):
            raise AttestationError(NAME, "join token is malformed")
        record = self._store.consume(token, now=now)
        if record is None:
            raise AttestationError(NAME, "join token does not exist or has already been used")
        if now >= record.expires_at:
            raise AttestationError(NAME, "join token has expired")
        return AttestResult(agent_id=join_token_agent_id(self._trust_domain, token), selectors=(), can_reattest=False)


@dataclass(frozen=True, slots=True)
class JoinTokenConfig:
    """``[node_attestors.join_token]``: ``enabled`` (default true)."""

    enabled: bool = True


def parse_config(table: Mapping[str, Any]) -> JoinTokenConfig:
    """The plugin table; join tokens are on unless ``enabled = false``."""
    unknown = sorted(set(table) - {"enabled"})
    if unknown:
        raise PluginConfigError(f"{unknown[0]}: unknown key")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise PluginConfigError(f"enabled: expected a boolean, got {enabled!r}")
    return JoinTokenConfig(enabled=enabled)


def build(config: JoinTokenConfig, host: PluginHost) -> JoinTokenAttestor | None:
    """The attestor, or None when the table disabled it."""
    return JoinTokenAttestor(host.trust_domain, host.store) if config.enabled else None

"""The node attestor seam: transport-agnostic challenge/response (SPIRE's challengeFn).

The agent API supplies ``challenge``, which sends bytes to the agent and returns its answer::

    result = await attestor.attest(payload, challenge, now=clock.now())
    result.agent_id      # spiffe://td/spire/agent/<attestor>/<...>
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import SpiffeId, TrustDomain

ChallengeFn = Callable[[bytes], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class AttestResult:
    """Who the agent is and what is known about its node."""

    agent_id: SpiffeId
    selectors: tuple[Selector, ...]
    can_reattest: bool  # False: trust on first use; the agent renews instead of re-attesting


class NodeAttestor(Protocol):
    """Verifies attestation evidence; raises AttestationError when it does not hold."""

    @property
    def name(self) -> str:
        """The attestation type, e.g. ``join_token``."""
        ...

    async def attest(self, payload: bytes, challenge: ChallengeFn, *, now: datetime) -> AttestResult:
        """Check ``payload`` (and any challenge answers) at ``now``."""
        ...


def agent_id(trust_domain: TrustDomain, attestor: str, *segments: str) -> SpiffeId:
    """SPIRE's agent ID form ``spiffe://<td>/spire/agent/<attestor>/<segments...>``."""
    return SpiffeId.from_segments(trust_domain, "spire", "agent", attestor, *segments)


class PluginConfigError(ValueError):
    """A plugin's config table is invalid; str() is ``key: reason`` (the loader adds the table path)."""


@dataclass(frozen=True, slots=True)
class PluginHost:
    """What the server hands a node attestor plugin when it builds it."""

    trust_domain: TrustDomain
    store: Any  # the datastore; a plugin declares the narrow Protocol it needs


@dataclass(frozen=True, slots=True)
class NodeAttestorPlugin:
    """A node attestor as the server's catalog knows it: its config parser and its factory.

    ``parse`` turns the ``[node_attestors.<name>]`` table into the plugin's own config (pure, at
    config load; PluginConfigError on a bad table); ``build`` makes the attestor at start.
    """

    name: str
    parse: Callable[[Mapping[str, Any]], object]
    build: Callable[[Any, PluginHost], NodeAttestor | None]  # None: the table turned it off
    enabled_by_default: bool = False


def string_key(table: Mapping[str, Any], key: str, *, known: frozenset[str]) -> str:
    """A required string key of a plugin table, after refusing unknown keys."""
    unknown = sorted(set(table) - known)
    if unknown:
        raise PluginConfigError(f"{unknown[0]}: unknown key")
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise PluginConfigError(f"{key}: required (a non-empty string)")
    return value

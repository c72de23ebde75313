"""The node attestor seam: transport-agnostic challenge/response (SPIRE's challengeFn).

The agent API supplies ``challenge``, which sends bytes to the agent and returns its answer::

    result = await attestor.attest(payload, challenge, now=clock.now())
    result.agent_id      # spiffe://td/spire/agent/<attestor>/<...>
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

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

"""join_token: the agent presents a single-use token the operator generated on the server.

Table: ``token``. The evidence is used up by the first attestation, so the agent can renew but
never re-attest with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spiffe_agent.errors import NodeAttestationError
from spiffe_agent.nodeattest.base import config_str

NAME = "join_token"


@dataclass(frozen=True, slots=True)
class JoinTokenClient:
    """Sends the token; the server sends no challenge."""

    token: str = field(repr=False)
    name: str = NAME
    reusable: bool = False

    @classmethod
    def from_config(cls, table: Mapping[str, Any]) -> JoinTokenClient:
        """Built from ``{"token": ...}``."""
        return cls(token=config_str(table, NAME, "token"))

    def payload(self) -> bytes:
        """The token."""
        return self.token.encode()

    def answer(self, challenge: bytes) -> bytes:
        """join_token has no challenge step."""
        raise NodeAttestationError("join_token: the server sent an unexpected challenge")

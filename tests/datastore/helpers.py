"""Small values shared by the datastore tests.

    entry = make_entry(spiffe_id="spiffe://example.org/web", selectors=sel("unix:uid:1000"))
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from spiffe_py.selectors import Selector
from spiffe_server.datastore import AttestedAgent, RegistrationEntry

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
TD = "spiffe://example.org"
AGENT_ID = f"{TD}/spire/agent/join_token/abc"


def sel(*texts: str) -> tuple[Selector, ...]:
    """Selectors from ``type:value`` strings."""
    return tuple(Selector.parse(t) for t in texts)


def make_entry(**fields: Any) -> RegistrationEntry:
    """An entry parented to AGENT_ID with one unix selector, overridden by ``fields``."""
    values: dict[str, Any] = {"spiffe_id": f"{TD}/web", "parent_id": AGENT_ID, "selectors": sel("unix:uid:1000"),
                              "created_at": NOW}
    values.update(fields)
    return RegistrationEntry(**values)


def make_agent(**fields: Any) -> AttestedAgent:
    """A join-token agent valid for an hour, overridden by ``fields``."""
    values: dict[str, Any] = {"spiffe_id": AGENT_ID, "attestation_type": "join_token", "serial": "01",
                              "expires_at": LATER, "created_at": NOW, "updated_at": NOW}
    values.update(fields)
    return AttestedAgent(**values)

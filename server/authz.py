"""Which registration entries an agent may act for (pure).

An agent is entitled to entries parented to its own ID, to one of its aliases
(node-alias entries parented to ``spiffe://<td>/spire/server`` whose selectors
are a subset of the agent's node selectors), and, recursively, to entries
parented to an entry it is entitled to::

    allowed = authorized_entries(agent_id, node_selectors, entries, server_id=server_id)
    check_entry_authorized(entry_id, allowed)   # raises AuthorizationError
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

from spiffe_py.errors import AuthorizationError
from spiffe_py.selectors import Selector, matches


class EntryLike(Protocol):
    """The entry fields authorization looks at."""

    @property
    def id(self) -> str: ...
    @property
    def spiffe_id(self) -> str: ...
    @property
    def parent_id(self) -> str: ...
    @property
    def selectors(self) -> tuple[Selector, ...]: ...


E = TypeVar("E", bound=EntryLike)


def node_aliases(node_selectors: Iterable[Selector], entries: Iterable[EntryLike], *, server_id: str) -> set[str]:
    """SPIFFE IDs of the node-alias entries whose selectors all belong to the agent's node selectors."""
    mine = frozenset(node_selectors)
    return {e.spiffe_id for e in entries if e.parent_id == server_id and matches(e.selectors, mine)}


def authorized_entries(agent_id: str, node_selectors: Iterable[Selector], entries: Sequence[E], *,
                       server_id: str) -> dict[str, E]:
    """Entries (by ID) the agent may act for: children of the agent or its aliases, recursively."""
    children: Mapping[str, list[E]] = _by_parent(entries)
    frontier = [agent_id, *sorted(node_aliases(node_selectors, entries, server_id=server_id))]
    seen_parents: set[str] = set()
    allowed: dict[str, E] = {}
    while frontier:
        parent = frontier.pop()
        if parent in seen_parents or parent == server_id:
            continue  # cycles between entries must not loop; nothing may inherit the server's children
        seen_parents.add(parent)
        for entry in children.get(parent, ()):
            allowed[entry.id] = entry
            frontier.append(entry.spiffe_id)
    return allowed


def _by_parent(entries: Iterable[E]) -> dict[str, list[E]]:
    out: dict[str, list[E]] = defaultdict(list)
    for entry in entries:
        out[entry.parent_id].append(entry)
    return out


def check_entry_authorized(entry_id: str, allowed: Mapping[str, E]) -> E:
    """Return the entry if the agent may act for it; raise AuthorizationError otherwise."""
    try:
        return allowed[entry_id]
    except KeyError:
        raise AuthorizationError(f"authz: entry is not authorized for this agent: {entry_id!r}") from None

"""In-memory index of registration entries by parent ID, and per-agent views kept current from it (pure).

The server builds the index once from the datastore and then applies the entries named by the
datastore's change log, in order; each application records a :class:`Delta` (old and new
state of one entry). An agent's :class:`AgentView` (the entries it may act for, see
server/authz.py) advances by those deltas, so a change costs work in proportion to the entries
it touches, not to the agent's size or the number of agents::

    index = EntryIndex(server_id)
    index.reset(entries, seq=seq)
    view, changed = advance(index, None, agent_id, selectors)         # changed: every entry
    index.apply({"e1": new_entry_or_none}, seq=seq + 1)
    view, changed = advance(index, view, agent_id, selectors)         # changed: {"e1": ...} if it is the agent's
    entry = index.entitled("e1", agent_id, selectors)                 # None unless the agent may act for it
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from spiffe_py.selectors import Selector, matches
from spiffe_server.datastore import RegistrationEntry

MAX_RETAINED_DELTAS = 100_000  # a view further behind than this is rebuilt from the index


@dataclass(frozen=True, slots=True)
class Delta:
    """One entry changed: ``old``/``new`` are None when it did not exist before/after."""

    version: int
    entry_id: str
    old: RegistrationEntry | None
    new: RegistrationEntry | None


class EntryIndex:
    """Entries by ID, by parent ID and by SPIFFE ID, plus the recent deltas (bounded)."""

    def __init__(self, server_id: str, *, retained: int = MAX_RETAINED_DELTAS) -> None:
        self.server_id = server_id
        self.seq = 0  # the datastore change-log position applied so far
        self.version = 0  # counts deltas since the index was created
        self.loaded = False
        self.entries: dict[str, RegistrationEntry] = {}
        self.by_parent: dict[str, dict[str, RegistrationEntry]] = {}
        self.by_spiffe_id: dict[str, dict[str, RegistrationEntry]] = {}
        self.deltas: deque[Delta] = deque(maxlen=retained)

    # -- updates ---------------------------------------------------------------------------------

    def reset(self, entries: Iterable[RegistrationEntry], *, seq: int) -> list[Delta]:
        """Replace the whole content (a first load, or a reload after the change log was pruned).

        Returns the deltas between the old and the new content, so views still advance by diff.
        """
        fresh = {e.id: e for e in entries}
        gone: dict[str, RegistrationEntry | None] = {eid: None for eid in self.entries if eid not in fresh}
        changes = {**gone, **{eid: e for eid, e in fresh.items() if self.entries.get(eid) != e}}
        deltas = self.apply(changes, seq=seq)
        self.loaded = True
        return deltas

    def apply(self, changes: Mapping[str, RegistrationEntry | None], *, seq: int) -> list[Delta]:
        """Set each entry to its new state (None: deleted); returns the deltas that changed something."""
        out: list[Delta] = []
        for entry_id, new in changes.items():
            old = self.entries.get(entry_id)
            if old == new:
                continue  # a change seen twice (the datastore is read after the log)
            if old is not None:
                self._unlink(old)
            if new is not None:
                self._link(new)
            self.version += 1
            delta = Delta(self.version, entry_id, old, new)
            self.deltas.append(delta)
            out.append(delta)
        self.seq = max(self.seq, seq)
        return out

    def _link(self, entry: RegistrationEntry) -> None:
        self.entries[entry.id] = entry
        self.by_parent.setdefault(entry.parent_id, {})[entry.id] = entry
        self.by_spiffe_id.setdefault(entry.spiffe_id, {})[entry.id] = entry

    def _unlink(self, entry: RegistrationEntry) -> None:
        del self.entries[entry.id]
        for table, key in ((self.by_parent, entry.parent_id), (self.by_spiffe_id, entry.spiffe_id)):
            bucket = table[key]
            del bucket[entry.id]
            if not bucket:
                del table[key]

    # -- queries ---------------------------------------------------------------------------------

    def deltas_since(self, version: int) -> list[Delta] | None:
        """The deltas after ``version``, oldest first; None if some are no longer retained."""
        if version >= self.version:
            return []
        if not self.deltas or self.deltas[0].version > version + 1:
            return None
        start = version + 1 - self.deltas[0].version
        return [self.deltas[i] for i in range(start, len(self.deltas))]

    def aliases(self, selectors: Iterable[Selector]) -> set[str]:
        """SPIFFE IDs of the node-alias entries (children of the server) that the node selectors satisfy."""
        mine = frozenset(selectors)
        return {e.spiffe_id for e in self.by_parent.get(self.server_id, {}).values() if matches(e.selectors, mine)}

    def authorized(self, agent_id: str, selectors: Iterable[Selector]) -> dict[str, RegistrationEntry]:
        """Entries the agent may act for (as server/authz.py ``authorized_entries``), from the index."""
        frontier = [agent_id, *sorted(self.aliases(selectors))]
        seen: set[str] = set()
        allowed: dict[str, RegistrationEntry] = {}
        while frontier:
            parent = frontier.pop()
            if parent in seen or parent == self.server_id:
                continue  # cycles must not loop; nothing may inherit the server's children
            seen.add(parent)
            for entry in self.by_parent.get(parent, {}).values():
                allowed[entry.id] = entry
                frontier.append(entry.spiffe_id)
        return allowed

    def entitled(self, entry_id: str, agent_id: str, selectors: Iterable[Selector],
                 known: set[str] | None = None) -> RegistrationEntry | None:
        """The entry if the agent may act for it, else None: walks up from its parent (O(depth)).

        ``known`` collects parent IDs already shown to be the agent's (pass one set per batch).
        """
        entry = self.entries.get(entry_id)
        if entry is None:
            return None
        known = set() if known is None else known
        mine = frozenset(selectors)
        frontier, seen = [entry.parent_id], set[str]()
        while frontier:
            parent = frontier.pop()
            if parent == self.server_id or parent in seen:
                continue
            if parent == agent_id or parent in known:
                known.add(entry.parent_id)
                return entry
            seen.add(parent)
            for holder in self.by_spiffe_id.get(parent, {}).values():
                if holder.parent_id == self.server_id:
                    if matches(holder.selectors, mine):  # a node alias of this agent
                        known.add(entry.parent_id)
                        return entry
                else:
                    frontier.append(holder.parent_id)
        return None


@dataclass
class AgentView:
    """The entries one agent may act for, as of index ``version``."""

    agent_id: str
    selectors: frozenset[Selector]
    version: int
    aliases: set[str]
    allowed: dict[str, RegistrationEntry]
    parents: Counter[str] = field(default_factory=Counter)  # SPIFFE IDs of allowed entries (may be parents)
    federates: Counter[str] = field(default_factory=Counter)  # trust domains named by allowed entries

    def is_parent(self, parent_id: str, server_id: str) -> bool:
        """Whether children of ``parent_id`` are the agent's."""
        if parent_id == server_id:
            return False
        return parent_id == self.agent_id or parent_id in self.aliases or self.parents[parent_id] > 0

    def touched_by(self, deltas: Iterable[Delta], server_id: str) -> bool:
        """Whether any delta can change this view (cheap: set lookups per delta)."""
        for d in deltas:
            for e in (d.old, d.new):
                if e is None:
                    continue
                if e.id in self.allowed or self.is_parent(e.parent_id, server_id):
                    return True
                if e.parent_id == server_id and matches(e.selectors, self.selectors):
                    return True
        return False

    def _add(self, entry: RegistrationEntry) -> None:
        self.allowed[entry.id] = entry
        self.parents[entry.spiffe_id] += 1
        self.federates.update(entry.federates_with)

    def _remove(self, entry: RegistrationEntry) -> None:
        del self.allowed[entry.id]
        self.parents[entry.spiffe_id] -= 1
        if self.parents[entry.spiffe_id] <= 0:
            del self.parents[entry.spiffe_id]
        self.federates.subtract(entry.federates_with)
        for td in entry.federates_with:
            if self.federates[td] <= 0:
                del self.federates[td]


def build_view(index: EntryIndex, agent_id: str, selectors: Iterable[Selector]) -> AgentView:
    """A fresh view from the whole index: O(the agent's entries)."""
    mine = frozenset(selectors)
    view = AgentView(agent_id=agent_id, selectors=mine, version=index.version, aliases=index.aliases(mine),
                     allowed={})
    for entry in index.authorized(agent_id, mine).values():
        view._add(entry)
    return view


def advance(index: EntryIndex, view: AgentView | None, agent_id: str, selectors: Iterable[Selector],
            ) -> tuple[AgentView, dict[str, RegistrationEntry | None]]:
    """Bring ``view`` up to the index: the new view and the entries that changed for the agent (None: removed).

    Incremental when possible; rebuilt (and diffed) when the view is new, its agent's selectors
    changed, it fell behind the retained deltas, or a delta moves an entry that has children
    or a node alias of the agent (whose subtrees would have to move too).
    """
    mine = frozenset(selectors)
    deltas = None if view is None or view.selectors != mine else index.deltas_since(view.version)
    partial: dict[str, RegistrationEntry | None] = {}
    if view is not None and deltas is not None:
        complete = _apply_deltas(index, view, deltas, partial)
        if complete:
            view.version = index.version
            return view, partial
    fresh = build_view(index, agent_id, mine)
    before = view.allowed if view is not None else {}
    changed = {eid: fresh.allowed.get(eid) for eid in partial}  # applied before the rebuild was found needed
    changed.update({eid: e for eid, e in fresh.allowed.items() if before.get(eid) is not e})
    changed.update({eid: None for eid in before if eid not in fresh.allowed})
    return fresh, changed


def _apply_deltas(index: EntryIndex, view: AgentView, deltas: Iterable[Delta],
                  changed: dict[str, RegistrationEntry | None]) -> bool:
    """Apply deltas to ``view`` in place, noting changed entries; False if it must be rebuilt instead."""
    server_id = index.server_id
    for d in deltas:
        old, new = d.old, d.new
        if any(e is not None and e.parent_id == server_id and matches(e.selectors, view.selectors)
               for e in (old, new)):
            return False  # one of the agent's node aliases changed
        was = view.allowed.get(d.entry_id)
        if was is not None:  # out first: an entry must not keep itself in through its own SPIFFE ID
            view._remove(was)
            changed[d.entry_id] = None
        now = new is not None and view.is_parent(new.parent_id, server_id)
        if now and new is not None:
            view._add(new)
            changed[d.entry_id] = new
        if was is None and not now:
            continue
        same_subtree = was is not None and now and new is not None and was.spiffe_id == new.spiffe_id
        if not same_subtree and any(e is not None and e.spiffe_id in index.by_parent for e in (was, new)):
            return False  # entries below it join or leave too
    return True

"""Pure builders of WHERE clauses (``?`` placeholders) for filtered, paged listings.

    where, params = entry_where(EntryFilter(by_parent_id=agent_id), after="")
    sql = f"SELECT ... FROM entries e WHERE {where} ORDER BY e.id LIMIT ?"
"""

from __future__ import annotations

from datetime import datetime

from spiffe_server.datastore._codec import selector_key, to_micros
from spiffe_server.datastore.models import AgentFilter, AuditFilter, EntryFilter, MatchMode, SelectorMatch

Clause = tuple[str, list[object]]


def _and(parts: list[Clause]) -> Clause:
    if not parts:
        return "1 = 1", []
    return " AND ".join(f"({sql})" for sql, _ in parts), [p for _, params in parts for p in params]


def _equal(column: str, value: object | None) -> list[Clause]:
    return [] if value is None else [(f"{column} = ?", [value])]


def _selector_clause(match: SelectorMatch) -> Clause:
    if match.mode is MatchMode.EXACT:
        return "e.selector_key = ?", [selector_key(match.selectors)]
    # Selector sets are bounded (64), so an OR chain stays small and portable.
    one_of = " OR ".join("(s.type = ? AND s.value = ?)" for _ in match.selectors)
    params: list[object] = [p for s in match.selectors for p in (s.type, s.value)]
    rows = "FROM entry_selectors s WHERE s.entry_id = e.id"
    if match.mode is MatchMode.SUBSET:
        return f"NOT EXISTS (SELECT 1 {rows} AND NOT ({one_of}))", params
    if match.mode is MatchMode.SUPERSET:
        return f"(SELECT COUNT(*) {rows} AND ({one_of})) = ?", [*params, len(match.selectors)]
    return f"EXISTS (SELECT 1 {rows} AND ({one_of}))", params


def entry_where(flt: EntryFilter, *, after: str = "") -> Clause:
    """WHERE clause over ``entries e`` for a filter, starting after entry ID ``after``."""
    parts = [
        *_equal("e.spiffe_id", flt.by_spiffe_id),
        *_equal("e.parent_id", flt.by_parent_id),
        *_equal("e.hint", flt.by_hint),
    ]
    if flt.by_selectors is not None:
        parts.append(_selector_clause(flt.by_selectors))
    parts.extend(
        ("EXISTS (SELECT 1 FROM entry_labels l WHERE l.entry_id = e.id AND l.key = ? AND l.value = ?)", [key, value])
        for key, value in flt.labels.items()
    )
    parts.extend(("EXISTS (SELECT 1 FROM entry_labels l WHERE l.entry_id = e.id AND l.key = ?)", [key])
                 for key in flt.label_keys)
    if after:
        parts.append(("e.id > ?", [after]))
    return _and(parts)


def agent_where(flt: AgentFilter, *, after: str = "") -> Clause:
    """WHERE clause over ``agents`` for a filter, starting after SPIFFE ID ``after``."""
    parts = [
        *_equal("attestation_type", flt.attestation_type),
        *_equal("banned", flt.banned),
        *_equal("can_reattest", flt.can_reattest),
    ]
    if flt.expires_before is not None:
        parts.append(("expires_at < ?", [to_micros(flt.expires_before)]))
    if after:
        parts.append(("spiffe_id > ?", [after]))
    return _and(parts)


def audit_where(flt: AuditFilter, *, after: int = 0) -> Clause:
    """WHERE clause over ``audit`` for a filter, starting after sequence number ``after``."""
    parts: list[Clause] = [*_equal("spiffe_id", flt.spiffe_id), *_equal("decision", flt.decision),
                           ("seq > ?", [after])]
    if flt.since is not None:
        parts.append(("time >= ?", [to_micros(flt.since)]))
    return _and(parts)


def revocation_where(*, now: datetime, after: tuple[str, str] | None = None) -> Clause:
    """WHERE clause over ``revocations``: unexpired at ``now``, after the (kind, value) key ``after``."""
    parts: list[Clause] = [("expires_at > ?", [to_micros(now)])]
    if after is not None:
        # Row values follow the primary key (kind, value): SQLite >= 3.15 and PostgreSQL seek on it.
        parts.append(("(kind, value) > (?, ?)", list(after)))
    return _and(parts)

"""The server's central audit chain, kept in the datastore and linked like ``spiffe_py.audit``.

One chain for the whole trust domain: the server's own decisions (attestations, mints, admin
changes) and every agent's forwarded records, each wrapped with the forwarding agent's ID::

    chain = CentralAudit(store, clock=clock)     # scans the stored chain once for its head
    chain.append([build_event(now=now, actor="server", spiffe_id=sid, selectors=[], decision="allow",
                              reason="attested", method="AttestAgent")])
    chain.forward(agent_id, records_json)        # checks the agent's own sub-chain first
    result = verify_store(store.iter_audit())     # VerifyResult naming the first broken record

A sealed record's ``seq`` equals the datastore row's ``seq`` (1, 2, 3, ...), so the stored
chain verifies with ``verify_chain(records, first_seq=1)``. The row's indexed columns
(``spiffe_id``, ``decision``, ``time``, ``hash``, ``prev_hash``) must agree with the sealed JSON,
so filtering cannot be fooled by editing a column either.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn, TypeVar

from server.datastore import (
    AuditRecord,
    AuditStore,
    ConflictError,
    InvalidArgumentError,
    Issuance,
    LimitExceededError,
    NotFoundError,
    Page,
)
from server.datastore.models import MAX_AUDIT_RECORD_BYTES, MAX_PAGE_SIZE
from server.metrics import AUDIT_ALERTS, AUDIT_RECORDS, AUDIT_WRITE_FAILURES
from spiffe_py.audit import (
    GENESIS_HASH,
    AuditEvent,
    AuditWriteError,
    BreakKind,
    VerifyResult,
    build_event,
    seal_record_text,
    verify_chain,
)
from spiffe_py.clock import Clock
from spiffe_py.errors import SpiffeError

log = logging.getLogger("spiffe_server.audit")

FIRST_SEQ = 1
MAX_FORWARDED_RECORDS = 1000
_APPEND_ATTEMPTS = 5
FORWARD_METHOD = "ForwardAudit"
R = TypeVar("R")
Seal = Callable[[Sequence[AuditEvent]], list[AuditRecord]]


class ForwardError(SpiffeError, ValueError):
    """Forwarded agent records are malformed or do not continue that agent's sub-chain."""

    grpc_status = "FAILED_PRECONDITION"


@dataclass(frozen=True, slots=True)
class _Head:
    seq: int
    hash: str


def _row(record: Mapping[str, Any], text: str) -> AuditRecord:
    """The stored row of a record we sealed; ``text`` is its canonical JSON."""
    prev = str(record["prev_hash"])
    return AuditRecord(
        seq=int(record["seq"]), time=_parse_time(str(record["time"])), record=text,
        prev_hash="" if prev == GENESIS_HASH else prev, hash=str(record["hash"]),
        spiffe_id=record.get("spiffe_id") or "", decision=str(record["decision"]))


_TIME_FORMAT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")  # format_time's, exactly


def _parse_time(text: str) -> datetime:
    """A record time in ``format_time``'s form (ValueError otherwise); fromisoformat is 50x cheaper than strptime."""
    if not _TIME_FORMAT.fullmatch(text):
        raise ValueError(f"time {text[:40]!r} is not YYYY-MM-DDTHH:MM:SS.ffffffZ")
    return datetime.fromisoformat(text)


def _forwarded(record: Mapping[str, Any]) -> Mapping[str, Any] | None:
    details = record.get("details")
    inner = details.get("forwarded") if isinstance(details, Mapping) else None
    return inner if isinstance(inner, Mapping) else None


class CentralAudit:
    """Appends to the stored chain; thread-safe (one lock, so seal and store stay in order)."""

    def __init__(self, store: AuditStore, *, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._head = _Head(FIRST_SEQ - 1, GENESIS_HASH)
        self._agents: dict[str, _Head] = {}
        self._catch_up()

    @property
    def head(self) -> tuple[int, str]:
        """(seq of the newest record, its hash); (0, GENESIS_HASH) when empty."""
        return self._head.seq, self._head.hash

    def _catch_up(self) -> None:
        """Read records stored after our head (at start, or after another server appended)."""
        page = Page(token=str(self._head.seq), size=MAX_PAGE_SIZE)
        while True:
            result = self._store.list_audit(page=page)
            for row in result.items:
                self._absorb(row)
            if not result.next_token:
                return
            page = Page(token=result.next_token, size=MAX_PAGE_SIZE)

    def _absorb(self, row: AuditRecord) -> None:
        """Move the head to a stored row (from the datastore: its JSON is parsed to follow agent sub-chains)."""
        try:
            record = json.loads(row.record)
        except ValueError:
            self._head = _Head(row.seq, row.hash)
            return  # a damaged row is verify's business, not the appender's
        self._advance(row, record if isinstance(record, dict) else {})

    def _advance(self, row: AuditRecord, record: Mapping[str, Any]) -> None:
        self._head = _Head(row.seq, row.hash)
        inner = _forwarded(record)
        if inner is not None and isinstance(inner.get("seq"), int):
            self._agents[str(record.get("actor"))] = _Head(int(inner["seq"]), str(inner.get("hash")))

    def append(self, events: Sequence[AuditEvent], issuances: Sequence[Issuance] = ()) -> list[dict[str, Any]]:
        """Seal and store ``events`` in order, with ``issuances`` logged in the same transaction.

        Raises AuditWriteError (logged, counted) if the store fails; then nothing was written.
        """
        with self._lock:
            return self._append_all(events, issuances)

    def _append_all(self, events: Sequence[AuditEvent], issuances: Sequence[Issuance]) -> list[dict[str, Any]]:
        """One transaction for every event and issuance (a batch's single write); retried on a moved chain."""
        for _ in range(_APPEND_ATTEMPTS):
            sealed = self._sealed(events)
            records = [record for record, _ in sealed]
            try:
                stored = self._store.append_audit_batch([_row(r, text) for r, text in sealed], issuances)
            except ConflictError:
                self._catch_up()  # another server sharing the database appended first
                continue
            except Exception as err:  # any store failure (disk full, read-only, driver error) is loud
                raise self._write_failed(err) from err
            for record, row in zip(records, stored, strict=True):
                self._accept(record, row)
            return records
        raise self._write_failed(ValueError("the chain kept moving under concurrent appenders"))

    def append_in(self, write: Callable[[Seal], R], stored: Callable[[R], Sequence[AuditRecord]]) -> R:
        """Run ``write(seal)``: one store transaction that appends ``seal(events)``'s rows with its own writes.

        ``stored`` picks the appended rows out of ``write``'s result. Retried when the chain moved;
        the request's own refusals (NotFoundError, LimitExceededError, InvalidArgumentError) pass
        through with nothing written; any other failure is an AuditWriteError.
        """
        with self._lock:
            for _ in range(_APPEND_ATTEMPTS):
                try:
                    return self._write_in(write, stored)
                except ConflictError:
                    self._catch_up()  # another server sharing the database appended first
        raise self._write_failed(ValueError("the chain kept moving under concurrent appenders"))

    def _write_in(self, write: Callable[[Seal], R], stored: Callable[[R], Sequence[AuditRecord]]) -> R:
        sealed: list[dict[str, Any]] = []

        def seal(events: Sequence[AuditEvent]) -> list[AuditRecord]:
            pairs = self._sealed(events)
            sealed[:] = [record for record, _ in pairs]
            return [_row(record, text) for record, text in pairs]

        try:
            result = write(seal)
        except (ConflictError, NotFoundError, LimitExceededError, InvalidArgumentError):
            raise
        except Exception as err:  # any store failure is loud, as in _append_all
            raise self._write_failed(err) from err
        for record, row in zip(sealed, stored(result), strict=True):
            self._accept(record, row)
        return result

    def _sealed(self, events: Sequence[AuditEvent]) -> list[tuple[dict[str, Any], str]]:
        """``events`` sealed as the next links after our head (not stored yet), each with its canonical JSON."""
        sealed: list[tuple[dict[str, Any], str]] = []
        seq, prev = self._head.seq, self._head.hash
        for event in events:
            seq += 1
            sealed.append(seal_record_text(event, seq=seq, prev_hash=prev))
            prev = sealed[-1][0]["hash"]
        return sealed

    def _append_one(self, event: AuditEvent) -> dict[str, Any]:
        return self._append_all([event], ())[0]

    def _accept(self, record: Mapping[str, Any], stored: AuditRecord) -> None:
        if stored.seq != record["seq"]:
            raise self._write_failed(ValueError(f"store assigned seq {stored.seq}, sealed {record['seq']}"))
        self._advance(stored, record)
        AUDIT_RECORDS.labels(decision=record["decision"]).inc()

    @staticmethod
    def _write_failed(err: Exception) -> AuditWriteError:
        AUDIT_WRITE_FAILURES.inc()
        log.error("AUDIT WRITE FAILED: the audit chain cannot be written; refusing the request: %s", err)
        return AuditWriteError(f"audit: cannot write to the datastore: {err}")

    # -- forwarded agent records ----------------------------------------------------------------

    def forward(self, agent_id: str, raw: Sequence[str]) -> int:
        """Check ``raw`` continues the agent's sub-chain, then append each record wrapped; returns how many.

        Records the server already has (seq at or below the agent's head, same hash) are skipped.

        Raises:
            ForwardError: malformed records or a broken sub-chain (also recorded as a deny).
        """
        records = _parse_forwarded(raw)
        with self._lock:
            fresh = self._fresh(agent_id, records)
            if not fresh:
                return 0
            # One transaction for the whole call: all of it is stored, or none (the agent resends).
            self._append_all([_wrap(agent_id, r) for r in fresh], ())
            self._agents[agent_id] = _Head(int(fresh[-1]["seq"]), str(fresh[-1]["hash"]))
            return len(fresh)

    def _fresh(self, agent_id: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records not stored yet, once they verify as the continuation of the agent's sub-chain."""
        if not records:
            return []
        head = self._agents.get(agent_id)
        start = _start_of(records[0])
        restart = False
        if head is not None:
            overlap = next((r for r in records if r.get("seq") == head.seq), None)
            if overlap is not None:  # a resend overlapping what we have: must be the same record
                if overlap.get("hash") != head.hash:
                    self._refuse(agent_id, f"record seq {head.seq} differs from the one already forwarded")
                records = [r for r in records if isinstance(r.get("seq"), int) and r["seq"] > head.seq]
                start = _Head(head.seq + 1, head.hash)
            elif start.seq == 0:
                restart = True  # a fresh agent chain (its file was lost): accepted, and raised as an alert
            else:
                start = _Head(head.seq + 1, head.hash)
        result = verify_chain(records, prev_hash=start.hash, first_seq=start.seq)
        if not result.ok:
            self._refuse(agent_id, f"agent record seq {result.seq}: {result.kind}: {result.reason}")
        if restart:
            AUDIT_ALERTS.labels(kind="agent_chain_restart").inc()
            log.warning("agent audit chain restarted at seq 0", extra={"spiffe_id": agent_id})
        return records

    def _refuse(self, agent_id: str, reason: str) -> NoReturn:
        AUDIT_ALERTS.labels(kind="agent_chain_break").inc()
        log.error("forwarded audit records refused", extra={"spiffe_id": agent_id, "reason": reason})
        self._append_one(build_event(now=self._clock.now(), actor=agent_id, spiffe_id=agent_id, selectors=(),
                                     decision="deny", reason=f"forwarded records refused: {reason}",
                                     method=FORWARD_METHOD))
        raise ForwardError(f"audit: forwarded records refused: {reason}")


def _start_of(first: Mapping[str, Any]) -> _Head:
    """Where an agent's sub-chain is anchored when the server has nothing of it yet."""
    seq = first.get("seq")
    if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0:
        return _Head(seq, str(first.get("prev_hash")))
    return _Head(0, GENESIS_HASH)


def _parse_forwarded(raw: Sequence[str]) -> list[dict[str, Any]]:
    if len(raw) > MAX_FORWARDED_RECORDS:
        raise ForwardError(f"audit: at most {MAX_FORWARDED_RECORDS} records per call, got {len(raw)}")
    records = []
    for i, text in enumerate(raw):
        if len(text.encode()) > MAX_AUDIT_RECORD_BYTES // 2:
            raise ForwardError(f"audit: record {i} is larger than {MAX_AUDIT_RECORD_BYTES // 2} bytes")
        try:
            value = json.loads(text)
        except ValueError:
            raise ForwardError(f"audit: record {i} is not JSON") from None
        if not isinstance(value, dict):
            raise ForwardError(f"audit: record {i} is not a JSON object")
        records.append(value)
    return records


def _wrap(agent_id: str, record: Mapping[str, Any]) -> AuditEvent:
    """The central event for one agent record: its fields, the agent as actor, the whole record kept."""
    try:
        return build_event(
            now=_parse_time(str(record["time"])), actor=agent_id, spiffe_id=_opt_str(record.get("spiffe_id")),
            selectors=list(record.get("selectors") or ()), decision=str(record["decision"]),
            reason=str(record.get("reason", "")), method=str(record.get("method", "")),
            serial=_opt_str(record.get("serial")), jti=_opt_str(record.get("jti")), details={"forwarded": record})
    except (KeyError, TypeError, ValueError) as err:
        raise ForwardError(f"audit: agent record seq {record.get('seq')!r} is not acceptable: {err}") from None


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


# -- verification ---------------------------------------------------------------------------------


def _column_problem(row: AuditRecord, record: Mapping[str, Any]) -> str | None:
    expected = _row(record, row.record)  # the columns only: the text itself is the row's
    for name in ("seq", "hash", "prev_hash", "spiffe_id", "decision", "time"):
        if getattr(row, name) != getattr(expected, name):
            return f"the row's {name} column does not match the sealed record"
    return None


def verify_store(rows: Iterable[AuditRecord]) -> VerifyResult:
    """Verify the stored chain: every row's JSON, its indexed columns and the hash links; pure."""
    records: list[dict[str, Any]] = []
    seqs: list[int] = []
    early: VerifyResult | None = None
    for index, row in enumerate(rows):
        seqs.append(row.seq)
        try:
            value = json.loads(row.record)
            record = value if isinstance(value, dict) else {}
        except ValueError:
            record = {}
        records.append(record)
        if early is None:
            problem = "the record is not a JSON object" if not record else _safe_columns(row, record)
            if problem is not None:
                kind = BreakKind.MALFORMED if not record else BreakKind.EDITED
                early = VerifyResult(ok=False, count=0, index=index, seq=row.seq, kind=kind, reason=problem)
    chained = verify_chain(records, first_seq=FIRST_SEQ)
    count = len(records)
    if early is not None and (chained.ok or (chained.index or 0) >= (early.index or 0)):
        return VerifyResult(ok=False, count=count, index=early.index, seq=early.seq, kind=early.kind,
                            reason=early.reason)
    if not chained.ok and chained.seq is None and chained.index is not None and chained.index < count:
        return VerifyResult(ok=False, count=count, index=chained.index, seq=seqs[chained.index],
                            kind=chained.kind, reason=chained.reason)
    return chained


def _safe_columns(row: AuditRecord, record: Mapping[str, Any]) -> str | None:
    try:
        return _column_problem(row, record)
    except (KeyError, TypeError, ValueError):
        return None  # malformed content: verify_chain names it


__all__ = ["FIRST_SEQ", "CentralAudit", "ForwardError", "verify_store"]

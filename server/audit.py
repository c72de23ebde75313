"""The server's central audit chain, kept in the datastore and linked like ``spiffe_py.audit``.

One chain for the whole trust domain: the server's own decisions (attestations, mints, admin
changes) and every agent's forwarded records (and those of the workloads in ``[audit] forwarders``,
alike), each wrapped with the forwarding agent's ID::

    chain = CentralAudit(store, clock=clock)     # reads the newest row: no chain scan at start
    chain.append([build_event(now=now, actor="server", spiffe_id=sid, selectors=[], decision="allow",
                              reason="attested", method="AttestAgent")])
    chain.forward(agent_id, records_json)        # checks the agent's own sub-chain first
    result = verify_store(store.iter_audit())     # VerifyResult naming the first broken record

A sealed record's ``seq`` equals the datastore row's ``seq`` (1, 2, 3, ...), so the stored
chain verifies with ``verify_chain(records, first_seq=1)``. Pruning (:meth:`CentralAudit.prune`,
under the ``audit_retention`` policy) deletes the oldest rows together with a signed *prune
anchor* naming the newest deleted record's seq and hash; the rows left then verify from that
anchor, so a chain cut anywhere else still fails. Each agent's forwarded sub-chain head is kept
in its own table, written in the append's transaction, so a restart reads only the newest row. The row's indexed columns
(``spiffe_id``, ``decision``, ``time``, ``hash``, ``prev_hash``) must agree with the sealed JSON,
so filtering cannot be fooled by editing a column either.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from spiffe_py.audit import (
    GENESIS_HASH,
    AuditEvent,
    AuditWriteError,
    BreakKind,
    VerifyResult,
    build_event,
    canonical_json,
    format_time,
    seal_record_text,
    verify_chain,
)
from spiffe_py.clock import Clock
from spiffe_py.errors import SpiffeError
from spiffe_server.datastore import (
    AlreadyExistsError,
    AuditCheckpoint,
    AuditRecord,
    AuditStore,
    InvalidArgumentError,
    Issuance,
    LimitExceededError,
    NotFoundError,
    Page,
)
from spiffe_server.datastore.base import AuditAppend
from spiffe_server.datastore.models import MAX_AUDIT_RECORD_BYTES, MAX_PAGE_SIZE
from spiffe_server.metrics import AUDIT_ALERTS, AUDIT_RECORDS, AUDIT_WRITE_FAILURES

log = logging.getLogger("spiffe_server.audit")

FIRST_SEQ = 1
MAX_FORWARDED_RECORDS = 1000
FORWARD_METHOD = "ForwardAudit"
CHECKPOINT_EVERY = 1000  # a signed checkpoint at every record whose seq is a multiple of this
CHECKPOINT_INTERVAL = 60.0  # seconds: a moved head is also checkpointed at least this often
CHECKPOINT_KEY_FILE = "audit-checkpoint.key"
PRUNE_BATCH = 50_000  # records deleted per prune transaction (each with its own signed anchor)
# signed bytes are this prefix and canonical JSON: never valid as any other message the server signs
_CHECKPOINT_CONTEXT = b"spiffe-py audit checkpoint v1\n"
_PRUNE_CONTEXT = b"spiffe-py audit prune anchor v1\n"  # "records up to seq were deleted by policy"
R = TypeVar("R")
# The store calls a SealAt inside its transaction with the chain head locked: (newest seq, its hash).
SealAt = Callable[[int, str], AuditAppend]
Sealer = Callable[[Sequence[AuditEvent]], SealAt]


class ForwardError(SpiffeError, ValueError):
    """Forwarded agent records are malformed or do not continue that agent's sub-chain."""


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


# -- signed checkpoints ----------------------------------------------------------------------------


def checkpoint_payload(seq: int, hash_: str, time: datetime, *, prune: bool = False) -> bytes:
    """The bytes a checkpoint's (or, with ``prune``, a prune anchor's) signature covers."""
    context = _PRUNE_CONTEXT if prune else _CHECKPOINT_CONTEXT
    return context + canonical_json({"hash": hash_, "seq": seq, "time": format_time(time)})


class CheckpointSigner:
    """Signs checkpoints of the audit chain with the server's Ed25519 audit key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key = key.public_key()

    @classmethod
    def load_or_create(cls, path: Path) -> CheckpointSigner:
        """The key in ``path`` (PKCS#8 PEM, 0600), created first if missing.

        Servers sharing a data directory race to create it: the file appears whole (written
        aside, then hard-linked), and the loser of the race loads the winner's key.
        """
        try:
            return cls(_load_key(path))
        except FileNotFoundError:
            pass
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        aside = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(aside, path)
        except FileExistsError:
            return cls(_load_key(path))
        finally:
            aside.unlink(missing_ok=True)
        return cls(key)

    def sign(self, seq: int, hash_: str, time: datetime, *, prune: bool = False) -> AuditCheckpoint:
        """A checkpoint stating that record ``seq`` has hash ``hash_``, made at ``time``.

        With ``prune``, a prune anchor: it also states that the records up to ``seq`` were deleted.
        """
        signature = self._key.sign(checkpoint_payload(seq, hash_, time, prune=prune))
        return AuditCheckpoint(seq=seq, hash=hash_, time=time, signature=base64.b64encode(signature).decode())


def _load_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"audit: {str(path)!r} does not hold an Ed25519 private key")
    return key


def checkpoint_signature_ok(checkpoint: AuditCheckpoint, public_key: Ed25519PublicKey, *,
                            prune: bool = False) -> bool:
    """Whether ``checkpoint`` (a prune anchor with ``prune``) was signed by the key of ``public_key``."""
    try:
        signature = base64.b64decode(checkpoint.signature, validate=True)
        public_key.verify(signature, checkpoint_payload(checkpoint.seq, checkpoint.hash, checkpoint.time,
                                                        prune=prune))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


class CentralAudit:
    """Appends to the stored chain; thread-safe (one lock, so seal and store stay in order)."""

    def __init__(self, store: AuditStore, *, clock: Clock, signer: CheckpointSigner | None = None,
                 checkpoint_every: int = CHECKPOINT_EVERY) -> None:
        if checkpoint_every < 1:
            raise ValueError("audit: checkpoint_every must be positive")
        self._store = store
        self._clock = clock
        self._signer = signer
        self._checkpoint_every = checkpoint_every
        self._lock = threading.Lock()
        newest = store.audit_head()  # one indexed read, however long the chain
        self._head = _Head(FIRST_SEQ - 1, GENESIS_HASH) if newest is None else _Head(newest.seq, newest.hash)
        self._fill_agent_heads()
        latest = store.latest_audit_checkpoint() if signer is not None else None
        self._checkpointed = latest.seq if latest is not None else 0

    @property
    def head(self) -> tuple[int, str]:
        """(seq of the newest record, its hash); (0, GENESIS_HASH) when empty."""
        return self._head.seq, self._head.hash

    @property
    def public_key(self) -> Ed25519PublicKey | None:
        """The key checkpoints are verified with (None: this chain signs none)."""
        return None if self._signer is None else self._signer.public_key

    def _fill_agent_heads(self) -> None:
        """Once, for a chain written before agent heads had their own table: find them in the older rows."""
        through = self._store.audit_heads_pending()
        if through <= 0:
            return
        log.info("audit: scanning the chain once for agent sub-chain heads", extra={"seq": through})
        heads: dict[str, tuple[int, str]] = {}
        page = Page(size=MAX_PAGE_SIZE)
        while True:
            result = self._store.list_audit(page=page)
            for row in result.items:
                if row.seq > through:
                    break
                with contextlib.suppress(ValueError):  # a damaged row is verify's business
                    record = json.loads(row.record)
                    inner = _forwarded(record) if isinstance(record, dict) else None
                    if inner is not None and isinstance(inner.get("seq"), int):
                        heads[str(record.get("actor"))] = (int(inner["seq"]), str(inner.get("hash")))
            if not result.next_token or (result.items and result.items[-1].seq >= through):
                break
            page = Page(token=result.next_token, size=MAX_PAGE_SIZE)
        self._store.fill_audit_agent_heads(heads, through=through)

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
        """Move the head to a stored row (agent sub-chain heads live in the store, not here)."""
        self._head = _Head(row.seq, row.hash)

    def append(self, events: Sequence[AuditEvent], issuances: Sequence[Issuance] = ()) -> list[dict[str, Any]]:
        """Seal and store ``events`` in order, with ``issuances`` logged in the same transaction.

        Raises AuditWriteError (logged, counted) if the store fails; then nothing was written.
        """
        with self._lock:
            return self._append_all(events, issuances)

    def _append_all(self, events: Sequence[AuditEvent], issuances: Sequence[Issuance],
                    agent_heads: Mapping[str, tuple[int, str]] | None = None) -> list[dict[str, Any]]:
        """One transaction for every event and issuance (a batch's single write), sealed under the chain lock."""
        _, records = self._write(
            lambda sealer: self._store.append_audit_sealed(sealer(events), issuances, agent_heads), lambda rows: rows)
        return records

    def append_in(self, write: Callable[[Sealer], R], stored: Callable[[R], Sequence[AuditRecord]]) -> R:
        """Run ``write(sealer)``: one store transaction that appends ``sealer(events)``'s rows with its own writes.

        ``stored`` picks the appended rows out of ``write``'s result. The request's own refusals
        (NotFoundError, AlreadyExistsError, LimitExceededError, InvalidArgumentError) pass through with nothing written;
        any other failure is an AuditWriteError.
        """
        with self._lock:
            return self._write(write, stored)[0]

    def _write(self, write: Callable[[Sealer], R],
               stored: Callable[[R], Sequence[AuditRecord]]) -> tuple[R, list[dict[str, Any]]]:
        known = self._head
        sealed: list[tuple[dict[str, Any], str]] = []

        def sealer(events: Sequence[AuditEvent]) -> SealAt:
            def seal(seq: int, newest: str) -> AuditAppend:
                # runs inside the store's transaction, with the chain head locked: (seq, newest) is the real head
                sealed[:] = self._sealed(events, _Head(seq, newest or GENESIS_HASH))
                return [_row(r, text) for r, text in sealed], self._due_checkpoints(sealed)
            return seal

        try:
            result = write(sealer)
        except (NotFoundError, AlreadyExistsError, LimitExceededError, InvalidArgumentError):
            raise
        except Exception as err:  # any store failure (disk full, read-only, driver error) is loud
            raise self._write_failed(err) from err
        rows = stored(result)
        if rows:
            self._follow(known, rows[0].seq - 1)
        records = [record for record, _ in sealed]
        for record, row in zip(records, rows, strict=True):
            self._accept(record, row)
        return result, records

    def _follow(self, known: _Head, before: int) -> None:
        """Absorb what other servers appended between our head and seq ``before`` (our records follow it)."""
        if before < known.seq:
            AUDIT_ALERTS.labels(kind="chain_shortened").inc()
            log.error("AUDIT CHAIN SHORTENED: the stored chain ends at seq %d, this server saw seq %d", before,
                      known.seq)
            self._head = _Head(before, self._head.hash)
            return
        page = Page(token=str(known.seq), size=MAX_PAGE_SIZE)
        while before > self._head.seq:
            result = self._store.list_audit(page=page)
            for row in result.items:
                if row.seq > before:
                    return
                self._absorb(row)
            if not result.next_token:
                return
            page = Page(token=result.next_token, size=MAX_PAGE_SIZE)

    def _sealed(self, events: Sequence[AuditEvent], head: _Head) -> list[tuple[dict[str, Any], str]]:
        """``events`` sealed as the next links after ``head`` (not stored yet), each with its canonical JSON."""
        sealed: list[tuple[dict[str, Any], str]] = []
        seq, prev = head.seq, head.hash
        for event in events:
            seq += 1
            sealed.append(seal_record_text(event, seq=seq, prev_hash=prev))
            prev = sealed[-1][0]["hash"]
        return sealed

    def _due_checkpoints(self, sealed: Sequence[tuple[dict[str, Any], str]]) -> list[AuditCheckpoint]:
        if self._signer is None:
            return []
        now = self._clock.now()
        return [self._signer.sign(int(r["seq"]), str(r["hash"]), now) for r, _ in sealed
                if int(r["seq"]) % self._checkpoint_every == 0]

    def checkpoint(self) -> AuditCheckpoint | None:
        """Sign and store a checkpoint of the head if it moved since the last one; the checkpoint, or None."""
        if self._signer is None:
            return None
        with self._lock:
            self._catch_up()
            if self._head.seq <= self._checkpointed:
                return None
            checkpoint = self._signer.sign(self._head.seq, self._head.hash, self._clock.now())
            try:
                self._store.add_audit_checkpoint(checkpoint)
            except Exception as err:
                raise self._write_failed(err) from err
            self._checkpointed = checkpoint.seq
            return checkpoint

    async def checkpoint_forever(self, interval: float = CHECKPOINT_INTERVAL) -> None:
        """:meth:`checkpoint` every ``interval`` seconds until cancelled; a failure is logged, the loop goes on."""
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(AuditWriteError):  # logged and counted by _write_failed
                await asyncio.to_thread(self.checkpoint)

    def prune(self, *, max_age: timedelta | None, max_records: int | None, batch: int = PRUNE_BATCH) -> int:
        """Delete the records the retention policy no longer keeps; returns how many.

        ``max_records`` keeps that many newest records, ``max_age`` drops records older than it;
        either may be None. The newest record always stays. Each transaction deletes at most
        ``batch`` records and stores a signed prune anchor at its last one, so ``audit verify``
        still proves the remaining chain (and a crash between transactions leaves a valid chain).
        Without a checkpoint signer nothing is pruned: the rest of the chain would prove nothing.
        """
        if self._signer is None or (max_age is None and max_records is None):
            return 0
        now = self._clock.now()
        with self._lock:
            self._catch_up()
            head = self._head.seq
        cutoff = 0
        if max_records is not None:
            cutoff = head - max_records
        if max_age is not None:
            cutoff = max(cutoff, self._store.audit_seq_before(now - max_age))
        cutoff = min(cutoff, head - 1)
        latest = self._store.latest_audit_prune()
        done, total = (latest.seq if latest is not None else 0), 0
        try:
            while done < cutoff:
                step = min(cutoff, done + batch)
                row = self._store.get_audit(step)
                if row is None:
                    log.error("audit: cannot prune: record seq %d is missing", step)
                    break
                total += self._store.prune_audit(self._signer.sign(step, row.hash, now, prune=True))
                done = step
        except Exception as err:
            raise self._write_failed(err) from err
        if total:
            log.info("audit records pruned", extra={"count": total, "seq": done})
        return total

    async def prune_forever(self, *, max_age: timedelta | None, max_records: int | None,
                            interval: float) -> None:
        """:meth:`prune` every ``interval`` seconds until cancelled; a failure is logged, the loop goes on."""
        while True:
            with contextlib.suppress(AuditWriteError):  # logged and counted by _write_failed
                await asyncio.to_thread(self.prune, max_age=max_age, max_records=max_records)
            await asyncio.sleep(interval)

    def _append_one(self, event: AuditEvent) -> dict[str, Any]:
        return self._append_all([event], ())[0]

    def _accept(self, record: Mapping[str, Any], stored: AuditRecord) -> None:
        if stored.seq != record["seq"]:
            raise self._write_failed(ValueError(f"store assigned seq {stored.seq}, sealed {record['seq']}"))
        self._absorb(stored)
        if self._signer is not None and stored.seq % self._checkpoint_every == 0:
            self._checkpointed = max(self._checkpointed, stored.seq)
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
            # One transaction for the whole call, the agent's new head included: all of it, or none
            # (the agent resends).
            self._append_all([_wrap(agent_id, r) for r in fresh], (),
                             {agent_id: (int(fresh[-1]["seq"]), str(fresh[-1]["hash"]))})
            return len(fresh)

    def _fresh(self, agent_id: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records not stored yet, once they verify as the continuation of the agent's sub-chain."""
        if not records:
            return []
        stored = self._store.audit_agent_head(agent_id)  # shared by every server on the database
        head = None if stored is None else _Head(*stored)
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
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the json module's limit
            raise ForwardError(f"audit: record {i} is not JSON (or is nested too deeply)") from None
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


def verify_store(rows: Iterable[AuditRecord], checkpoints: Iterable[AuditCheckpoint] = (),
                 public_key: Ed25519PublicKey | None = None, pruned: AuditCheckpoint | None = None) -> VerifyResult:
    """Verify the stored chain: every row's JSON, its indexed columns, the hash links, then the checkpoints; pure.

    Each checkpoint must carry a valid signature of ``public_key`` (required when there are
    checkpoints) and name a record of the chain by its seq and hash. A chain cut and re-hashed
    from before a checkpoint therefore fails, even though its links are consistent.

    ``pruned`` is the newest prune anchor. A chain that does not start at seq 1 must start right
    after it: the anchor must be signed by ``public_key`` as a prune anchor and name the first
    remaining record's ``prev_hash``. Any other missing head is a cut chain.
    """
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
    count = len(records)
    first_seq = seqs[0] if seqs else (pruned.seq + 1 if pruned is not None else FIRST_SEQ)
    start = _prune_problem(records[0] if records else None, first_seq, pruned, public_key)
    if isinstance(start, VerifyResult):
        return VerifyResult(ok=False, count=count, index=0, seq=start.seq, kind=start.kind, reason=start.reason)
    chained = verify_chain(records, prev_hash=start, first_seq=first_seq)
    if early is not None and (chained.ok or (chained.index or 0) >= (early.index or 0)):
        return VerifyResult(ok=False, count=count, index=early.index, seq=early.seq, kind=early.kind,
                            reason=early.reason)
    if not chained.ok and chained.seq is None and chained.index is not None and chained.index < count:
        return VerifyResult(ok=False, count=count, index=chained.index, seq=seqs[chained.index],
                            kind=chained.kind, reason=chained.reason)
    if not chained.ok:
        return chained
    return _verify_checkpoints(records, checkpoints, public_key, first_seq)


def _prune_problem(first: Mapping[str, Any] | None, first_seq: int, pruned: AuditCheckpoint | None,
                   public_key: Ed25519PublicKey | None) -> str | VerifyResult:
    """The hash the first remaining record must link to, or why the chain's start is not a proven prune."""
    if pruned is None:
        if first_seq == FIRST_SEQ:
            return GENESIS_HASH
        return VerifyResult(ok=False, count=0, seq=first_seq, kind=BreakKind.TRUNCATED,
                            reason=f"the chain starts at seq {first_seq} and no signed prune anchor covers "
                                   f"seq {FIRST_SEQ}..{first_seq - 1}: its head was cut")
    if public_key is None or not checkpoint_signature_ok(pruned, public_key, prune=True):
        return VerifyResult(ok=False, count=0, seq=first_seq, kind=BreakKind.EDITED,
                            reason=f"the prune anchor at seq {pruned.seq} is not signed by this server's audit key")
    if pruned.seq != first_seq - 1:
        kind = BreakKind.TRUNCATED if pruned.seq < first_seq - 1 else BreakKind.EDITED
        return VerifyResult(ok=False, count=0, seq=first_seq, kind=kind,
                            reason=f"records up to seq {pruned.seq} were pruned, but the chain starts at seq "
                                   f"{first_seq}")
    if first is not None and first.get("prev_hash") != pruned.hash:
        return VerifyResult(ok=False, count=0, seq=first_seq, kind=BreakKind.EDITED,
                            reason=f"record seq {first_seq} does not follow the pruned record seq {pruned.seq}")
    return pruned.hash


def _verify_checkpoints(records: Sequence[Mapping[str, Any]], checkpoints: Iterable[AuditCheckpoint],
                        public_key: Ed25519PublicKey | None, first_seq: int = FIRST_SEQ) -> VerifyResult:
    """The first checkpoint that is not signed by ``public_key`` or that the (linked) chain does not contain."""
    count = len(records)
    for checkpoint in checkpoints:
        problem = _checkpoint_problem(records, checkpoint, public_key, first_seq)
        if problem is not None:
            kind, reason, seq = problem
            return VerifyResult(ok=False, count=count, index=max(0, min(seq - first_seq, count)), seq=seq,
                                kind=kind, reason=reason)
    return VerifyResult(ok=True, count=count)


def _checkpoint_problem(records: Sequence[Mapping[str, Any]], checkpoint: AuditCheckpoint,
                        public_key: Ed25519PublicKey | None,
                        first_seq: int = FIRST_SEQ) -> tuple[BreakKind, str, int] | None:
    seq, index = checkpoint.seq, checkpoint.seq - first_seq
    if public_key is None or not checkpoint_signature_ok(checkpoint, public_key):
        return BreakKind.EDITED, f"the checkpoint at seq {seq} is not signed by this server's audit key", seq
    if index < 0:
        return None  # a pruned record: the prune anchor (checked already) vouches for everything up to it
    if index >= len(records):
        last = len(records) + first_seq - 1
        return (BreakKind.TRUNCATED, f"a signed checkpoint names seq {seq} but the chain ends at seq {last}: "
                                     "its tail was cut", last)
    if records[index].get("hash") != checkpoint.hash:
        return (BreakKind.EDITED, f"record seq {seq} is not the one signed at {format_time(checkpoint.time)}: "
                                  "the chain was rewritten", seq)
    return None


def parse_anchor(text: str) -> tuple[int, str]:
    """(seq, hash) of an exported head (``audit export-head``); ValueError if it is not one."""
    try:
        value = json.loads(text)
    except ValueError:
        raise ValueError("not JSON") from None
    seq = value.get("seq") if isinstance(value, dict) else None
    hash_ = value.get("hash") if isinstance(value, dict) else None
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < FIRST_SEQ:
        raise ValueError("seq is missing or not a positive integer")
    if not isinstance(hash_, str) or not re.fullmatch(r"[0-9a-f]{64}", hash_):
        raise ValueError("hash is missing or not 64 lowercase hex digits")
    return seq, hash_


def anchor_problem(anchor: tuple[int, str], record: Mapping[str, Any] | None) -> str | None:
    """Why the chain, whose record at the anchor's seq is ``record`` (None: none), does not contain the anchor."""
    seq, hash_ = anchor
    if record is None or record.get("seq") != seq:
        return f"the chain has no record seq {seq}: its tail was cut after the head was exported"
    if record.get("hash") != hash_:
        return f"record seq {seq} is not the exported head: the chain was rewritten"
    return None


def export_head(record: Mapping[str, Any]) -> str:
    """The anchor file text for the chain's head ``record``: its seq, hash and time."""
    return json.dumps({"seq": record["seq"], "hash": record["hash"], "time": record["time"]}) + "\n"


def _safe_columns(row: AuditRecord, record: Mapping[str, Any]) -> str | None:
    try:
        return _column_problem(row, record)
    except (KeyError, TypeError, ValueError):
        return None  # malformed content: verify_chain names it


__all__ = [
    "CHECKPOINT_KEY_FILE",
    "FIRST_SEQ",
    "CentralAudit",
    "CheckpointSigner",
    "ForwardError",
    "anchor_problem",
    "checkpoint_payload",
    "checkpoint_signature_ok",
    "export_head",
    "parse_anchor",
    "verify_store",
]

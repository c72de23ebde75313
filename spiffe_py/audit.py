"""Tamper-evident audit trail: hash-chained JSON records, a JSONL sink and a pure verifier.

Each record carries ``seq``, the previous record's hash (``prev_hash``) and its own ``hash``:
SHA-256 over the canonical JSON (sorted keys, no whitespace, UTF-8) of every other field::

    log = AuditLog.resume(JsonlFileSink(path), load_jsonl(path))   # verifies, then continues
    log.append(build_event(now=clock.now(), actor="agent", spiffe_id="spiffe://td/w", selectors=["unix:uid:0"],
                           decision="allow", reason="no deny rule matched", method="FetchJWTSVID", jti="abc"))
    result = verify_chain(load_jsonl(path))   # VerifyResult(ok, index, seq, kind, reason)

:func:`build_event` refuses values that look like a PEM private key or a JWT, so that no secret
can be written to the trail by mistake.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from spiffe_py.errors import SpiffeError

GENESIS_HASH = "0" * 64
MAX_DETAILS_BYTES = 16 * 1024
MAX_LINE_BYTES = 256 * 1024
_SEALED_KEYS = ("seq", "prev_hash", "hash")
_HASH_RE = re.compile(r"[0-9a-f]{64}")
_PEM_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
# a JWS compact serialisation: base64url header starting '{"' (eyJ), payload, signature
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
# both patterns in one pass over the canonical JSON text; JSON escaping only touches characters
# outside the patterns (quotes, backslashes, controls) and starts each escape with a backslash,
# so a secret in any string value or key is also a match in the text
_ANY_SECRET = re.compile(f"{_PEM_PRIVATE_KEY.pattern}|{_JWT.pattern}")
_SECRET_LITERALS = ("PRIVATE KEY-----", "eyJ")  # each pattern needs one; substring tests are far cheaper


def _may_hold_secret(text: str) -> bool:
    return any(lit in text for lit in _SECRET_LITERALS) and _ANY_SECRET.search(text) is not None


class AuditSecretError(SpiffeError, ValueError):
    """An audit field looked like a private key or a token; the value is never shown."""


class AuditWriteError(SpiffeError, OSError):
    """The audit sink could not durably write a record (disk full, unwritable, ...)."""


class AuditChainError(SpiffeError, ValueError):
    """Existing records do not verify, so the chain cannot be resumed; ``.result`` says where."""

    def __init__(self, result: VerifyResult) -> None:
        self.result = result
        super().__init__(f"audit: chain broken at index {result.index} ({result.kind}): {result.reason}")


class Outcome(enum.StrEnum):
    """The ``decision`` field."""

    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit record before chaining; build it with :func:`build_event`."""

    time: str
    actor: str
    spiffe_id: str | None
    selectors: tuple[str, ...]
    decision: Outcome
    reason: str
    method: str
    serial: str | None = None
    jti: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    # canonical JSON of everything but time, seq and prev_hash (see _render); shared by the copies at()
    # makes, so an event repeated with a new time is serialised once. Events are immutable, details included.
    _pieces: tuple[str, ...] | None = field(default=None, repr=False, compare=False)

    def at(self, now: datetime) -> AuditEvent:
        """This event stamped ``now`` (the same record but for its time), serialised only for the new time."""
        return AuditEvent(time=format_time(now), actor=self.actor, spiffe_id=self.spiffe_id, selectors=self.selectors,
                          decision=self.decision, reason=self.reason, method=self.method, serial=self.serial,
                          jti=self.jti, details=self.details, _pieces=self._pieces or _render(self))

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready fields (without seq and hashes)."""
        return {
            "time": self.time, "actor": self.actor, "spiffe_id": self.spiffe_id, "selectors": list(self.selectors),
            "decision": str(self.decision), "reason": self.reason, "method": self.method,
            "serial": self.serial, "jti": self.jti, "details": dict(self.details),
        }


def _check_secret(value: str, where: str) -> None:
    if _PEM_PRIVATE_KEY.search(value):
        raise AuditSecretError(f"audit: {where} looks like a private key; refusing to record it")
    if _JWT.search(value):
        raise AuditSecretError(f"audit: {where} looks like a JWT; refusing to record it")


def _check_json(value: object, where: str) -> None:
    """Only plain JSON types, finite numbers and no secrets, recursively."""
    if isinstance(value, str):
        _check_secret(value, where)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"audit: {where} is not a finite number")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"audit: {where} keys must be strings")
            _check_secret(key, f"a key of {where}")
            _check_json(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_json(item, f"{where}[{i}]")
    elif value is not None and not isinstance(value, bool | int | float):
        raise TypeError(f"audit: {where} has non-JSON type {type(value).__name__}")


def _has_non_str_key(value: object) -> bool:
    # json.dumps silently turns int/float/bool/None keys into strings; the record must not change shape
    # (a plain loop: this runs on every record, most of which hold one small flat dict)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or (isinstance(item, dict | list | tuple) and _has_non_str_key(item)):
                return True
    elif isinstance(value, list | tuple):
        for item in value:
            if isinstance(item, dict | list | tuple) and _has_non_str_key(item):
                return True
    return False


def _check_fields(fields: dict[str, Any]) -> str:
    """All of :func:`_check_json` for every field, with one serialisation and one regex pass when clean.

    The per-field walk (which names the offending field) runs only when the fast pass finds
    something: a secret-looking match, a value json refuses, or a non-string key. Returns the
    canonical text of ``fields``.
    """
    try:
        text = _canonical_text(fields)
        suspicious = _may_hold_secret(text) or _has_non_str_key(fields["details"])
    except (TypeError, ValueError):
        suspicious = True
    if suspicious:
        for name, value in fields.items():
            _check_json(value, name)
        # escapes can fake a match (e.g. "\u001e" + "yJ...") that no single value has: the walk decides
        text = _canonical_text(fields)  # a value only json refuses (an unusual Mapping) still fails here
    return text


def format_time(now: datetime) -> str:
    """RFC 3339 UTC with microseconds and a ``Z`` suffix."""
    if now.tzinfo is None:
        raise ValueError("audit: now must be timezone-aware")
    # isoformat is the same text as strftime("%Y-%m-%dT%H:%M:%S.%fZ") (years >= 1000), at a fraction of the cost
    return now.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def build_event(
    *,
    now: datetime,
    actor: str,
    spiffe_id: str | None,
    selectors: Iterable[object],
    decision: Outcome | str,
    reason: str,
    method: str,
    serial: str | None = None,
    jti: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Build an event, refusing private keys and JWTs anywhere in it.

    Raises:
        AuditSecretError: a value (or a details key) looks like a PEM private key or a JWT.
    """
    event = AuditEvent(
        time=format_time(now), actor=actor, spiffe_id=spiffe_id, selectors=tuple(str(s) for s in selectors),
        decision=Outcome(decision), reason=reason, method=method, serial=serial, jti=jti,
        details=dict(details or {}),
    )
    fields = event.to_dict()
    text = _check_fields(fields)
    # details are part of the whole record: only a large record needs its details measured alone
    # (encoding the whole text also refuses lone surrogates anywhere, as sealing would)
    if len(text.encode()) > MAX_DETAILS_BYTES and len(canonical_json(fields["details"])) > MAX_DETAILS_BYTES:
        raise ValueError(f"audit: details larger than {MAX_DETAILS_BYTES} bytes")
    return replace(event, _pieces=_render(event, text, fields))


def canonical_json(value: object) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes that get hashed."""
    return _canonical_text(value).encode()


# json.dumps(value, **options) builds a new JSONEncoder per call; one instance gives the same text
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
# what _CANONICAL.encode(a_str) returns (JSONEncoder.encode hands a str to it), without the method call
_json_string: Callable[[str], str] = json.encoder.encode_basestring


def _canonical_text(value: object) -> str:
    return _CANONICAL.encode(value)


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 (hex) over the canonical JSON of every field except ``hash``."""
    return hashlib.sha256(canonical_json({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def seal_record(event: AuditEvent, *, seq: int, prev_hash: str) -> dict[str, Any]:
    """Chain ``event`` after the record whose hash is ``prev_hash``."""
    return _seal(event, seq, prev_hash)[0]


def seal_record_text(event: AuditEvent, *, seq: int, prev_hash: str) -> tuple[dict[str, Any], str]:
    """:func:`seal_record` and ``canonical_json`` of the result as text, serialised once."""
    return _seal(event, seq, prev_hash)


# The fields sealed into a record besides the event's own (AuditEvent.to_dict is the one list of
# those). The chain fills them in at sealing; ``time`` is an event field, stamped anew by ``at()``.
_CHAINED_KEYS = ("prev_hash", "seq")
# values spliced into a rendered event at sealing, in sorted key order; every one sorts after
# "hash", so the canonical text is: members before "hash", the hash member, the rest (see _render)
_SLOTS = ("prev_hash", "seq", "time")
assert list(_SLOTS) == sorted(_SLOTS) and all(k > "hash" for k in _SLOTS)

Pieces = tuple[str, ...]


def _render(event: AuditEvent, text: str | None = None, fields: dict[str, Any] | None = None) -> Pieces:
    """The canonical text of a sealed record of ``event``, cut where hash, prev_hash, seq and time go.

    Derived from ``event.to_dict()``, so a field added there is sealed, hashed and stored alike.
    The canonical encoding of an object is its members in sorted key order joined by commas; the
    result is ``(head, t0, t1, t2, t3)``: ``head`` is ``{`` and the members sorting before
    ``hash``, and the members after it are ``t0 prev_hash t1 seq t2 time t3``. ``text``, the
    canonical text of ``event.to_dict()`` (build_event has it), already holds the head: a large
    ``details`` is not encoded again; ``fields``, ``event.to_dict()`` if the caller has it.
    """
    fields = event.to_dict() if fields is None else fields
    keys = sorted([*fields, *_CHAINED_KEYS])
    # the event's own members after "hash" (time among them); those before it may be large (details)
    after = {k: f"{_json_string(k)}:{_canonical_text(fields[k])}" for k in keys if k > "hash" and k in fields}
    tail: list[str] = []
    pending = ""
    for i, key in enumerate(k for k in keys if k > "hash"):
        sep = "," if i else ""
        if key in _SLOTS:  # this piece ends with the slot's key
            tail.append(f"{pending}{sep}{_json_string(key)}:")
            pending = ""
        else:
            pending = f"{pending}{sep}{after[key]}"
    tail.append(f"{pending}}}")
    rest = "," + ",".join(after.values()) + "}"  # how ``text`` ends after the head
    if text is not None and text.endswith(rest):
        head = text[:-len(rest)]
    else:
        head = "{" + ",".join(f"{_json_string(k)}:{_canonical_text(fields[k])}" for k in keys if k < "hash")
    return (head, *tail)


def _seal_text(event: AuditEvent, seq: int, prev_hash: str, time: str) -> tuple[str, str]:
    """(hash, canonical text) of ``event`` sealed at ``seq`` after ``prev_hash``, stamped ``time``.

    The text without ``hash`` (what is hashed) and with it (the stored text) are the same two
    parts, the members before ``hash`` and those after it, joined with or without the hash member.
    """
    head_text, t0, t1, t2, t3 = event._pieces or _render(event)
    tail_text = f"{t0}{_json_string(prev_hash)}{t1}{int(seq)}{t2}{_json_string(time)}{t3}"
    digest = hashlib.sha256(f"{head_text},{tail_text}".encode()).hexdigest()
    return digest, f'{head_text},"hash":"{digest}",{tail_text}'


def _seal(event: AuditEvent, seq: int, prev_hash: str) -> tuple[dict[str, Any], str]:
    """The sealed record and its canonical text (``canonical_json(record)`` as str), serialised once."""
    digest, text = _seal_text(event, seq, prev_hash, event.time)
    record = event.to_dict()
    record.update(prev_hash=prev_hash, seq=seq, hash=digest)
    return record, text


# --- verification ----------------------------------------------------------------------------


class BreakKind(enum.StrEnum):
    """Why a chain failed to verify."""

    MALFORMED = "malformed"
    EDITED = "edited"
    REMOVED = "removed"
    REORDERED = "reordered"
    TRUNCATED = "truncated"


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of :func:`verify_chain`; for a broken chain, the FIRST broken link."""

    ok: bool
    count: int
    index: int | None = None
    seq: int | None = None
    kind: BreakKind | None = None
    reason: str = ""


def _malformed(record: object) -> str | None:
    if not isinstance(record, Mapping):
        return "record is not an object"
    seq, prev, digest = (record.get(k) for k in _SEALED_KEYS)
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        return "seq is missing or not a non-negative integer"
    for name, value in (("prev_hash", prev), ("hash", digest)):
        if not isinstance(value, str) or not _HASH_RE.fullmatch(value):
            return f"{name} is missing or not 64 lowercase hex digits"
    return None


def _broken(index: int, record: Mapping[str, Any] | None, kind: BreakKind, reason: str, count: int) -> VerifyResult:
    seq = record.get("seq") if record is not None else None
    return VerifyResult(ok=False, count=count, index=index, seq=seq if isinstance(seq, int) else None,
                        kind=kind, reason=reason)


def _link_break(index: int, seq: int, expected_seq: int, later_seqs: set[int]) -> tuple[BreakKind, str]:
    """Classify a record whose prev_hash or seq does not follow the record before it."""
    if seq == expected_seq:
        if index == 0:
            return BreakKind.EDITED, "prev_hash does not match the expected start of the chain"
        # both records hash correctly, so one of them was rewritten and rehashed
        return BreakKind.EDITED, f"prev_hash does not match record {index - 1}: a record was rewritten"
    if expected_seq in later_seqs or seq < expected_seq:
        return BreakKind.REORDERED, f"expected seq {expected_seq}, found seq {seq} out of order"
    return BreakKind.REMOVED, f"records with seq {expected_seq}..{seq - 1} are missing"


def verify_chain(
    records: Sequence[Mapping[str, Any]],
    *,
    prev_hash: str = GENESIS_HASH,
    first_seq: int = 0,
    head_hash: str | None = None,
) -> VerifyResult:
    """Check every hash and link; pure. ``head_hash`` (the last hash seen elsewhere) detects truncation.

    By default the chain must start at seq 0 after :data:`GENESIS_HASH`; pass ``prev_hash`` and
    ``first_seq`` to verify a later segment.
    """
    count = len(records)
    seqs = [r.get("seq") if isinstance(r, Mapping) else None for r in records]
    expected_prev, expected_seq = prev_hash, first_seq
    for index, record in enumerate(records):
        problem = _malformed(record)
        if problem is not None:
            return _broken(index, record if isinstance(record, Mapping) else None, BreakKind.MALFORMED, problem, count)
        try:
            digest = record_hash(record)
        except ValueError as err:  # e.g. NaN parsed from the file cannot be canonicalised
            return _broken(index, record, BreakKind.MALFORMED, f"not canonical JSON: {err}", count)
        if digest != record["hash"]:
            return _broken(index, record, BreakKind.EDITED, "hash does not match the record's content", count)
        if record["prev_hash"] != expected_prev or record["seq"] != expected_seq:
            later = {s for s in seqs[index + 1:] if isinstance(s, int)}
            kind, reason = _link_break(index, record["seq"], expected_seq, later)
            return _broken(index, record, kind, reason, count)
        expected_prev, expected_seq = record["hash"], expected_seq + 1
    if head_hash is not None and head_hash != expected_prev:
        return _broken(count, None, BreakKind.TRUNCATED, "the last record is not the expected head", count)
    return VerifyResult(ok=True, count=count)


# --- sinks -----------------------------------------------------------------------------------


class AuditSink(Protocol):
    """Somewhere sealed records go, durably and in order."""

    def write(self, record: Mapping[str, Any]) -> None: ...


@runtime_checkable
class CanonicalAuditSink(AuditSink, Protocol):
    """A sink that also takes a record already serialised: ``write_canonical(canonical_json(record).decode())``.

    :class:`AuditLog` seals a record straight to that text, so such a sink is handed the text
    and no record dict is built on the hot path.
    """

    def write_canonical(self, text: str) -> None: ...


def parse_jsonl(text: str) -> list[dict[str, Any]]:
    """Parse a JSONL audit file (blank lines ignored).

    Raises:
        ValueError: a line is not a JSON object.
    """
    records: list[dict[str, Any]] = []
    # "\n" only: str.splitlines() also splits at U+2028, U+0085, \x1c..., which canonical JSON
    # (ensure_ascii=False) leaves unescaped inside strings
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        if len(line) > MAX_LINE_BYTES:
            raise ValueError(f"audit: line {number} is longer than {MAX_LINE_BYTES} bytes")
        value = json.loads(line)
        if not isinstance(value, dict):
            raise ValueError(f"audit: line {number} is not a JSON object")
        records.append(value)
    return records


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL audit file, then :func:`parse_jsonl` it."""
    return parse_jsonl(path.read_text(encoding="utf-8"))


DEFAULT_MAX_FILES = 8
_ROTATED_DIGITS = 20


def _rotated_name(path: Path, start: int) -> Path:
    """A rotated file: the active file's name and the trail offset of its first byte."""
    return path.with_name(f"{path.name}.{start:0{_ROTATED_DIGITS}d}")


def _trail_files(path: Path) -> tuple[list[tuple[int, Path]], int]:
    """The rotated files of the trail at ``path``, oldest first, each with its trail offset; and the active file's."""
    prefix = f"{path.name}."
    rotated: list[tuple[int, Path]] = []
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        names = []
    for name in names:
        suffix = name[len(prefix):]
        if name.startswith(prefix) and len(suffix) == _ROTATED_DIGITS and suffix.isdigit():
            rotated.append((int(suffix), path.parent / name))
    rotated.sort()
    if not rotated:
        return rotated, 0
    start, last = rotated[-1]
    return rotated, start + last.stat().st_size


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def trail_files(path: Path) -> list[Path]:
    """Every file of the trail at ``path`` in chain order: rotated files oldest first, then ``path`` if present."""
    files = [file for _, file in _trail_files(path)[0]]
    return [*files, path] if path.exists() else files


def last_rotated_record(path: Path) -> dict[str, Any] | None:
    """The last record of the newest file rotated out of ``path`` (None if none): where ``path`` continues."""
    rotated = _trail_files(path)[0]
    if not rotated:
        return None
    with rotated[-1][1].open("rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - MAX_LINE_BYTES - 1))
        lines = [line for line in fh.read().split(b"\n") if line.strip()]
    records = parse_jsonl(lines[-1].decode("utf-8")) if lines else []
    return records[-1] if records else None


def verify_trail(path: Path) -> tuple[VerifyResult, list[tuple[Path, int]]]:
    """Verify the trail at ``path`` across its rotated files; also each file with the index of its first record.

    The oldest file kept may start mid-chain (older ones were deleted by rotation): the chain is
    then checked from its first record on. Every later file must continue the one before it.
    """
    records: list[dict[str, Any]] = []
    files: list[tuple[Path, int]] = []
    for file in trail_files(path):
        files.append((file, len(records)))
        records.extend(load_jsonl(file))
    first = records[0] if records else {}
    seq, prev = first.get("seq"), first.get("prev_hash")
    if isinstance(seq, int) and seq > 0 and isinstance(prev, str):
        return verify_chain(records, prev_hash=prev, first_seq=seq), files
    return verify_chain(records), files


class FsyncMode(enum.StrEnum):
    """When :class:`JsonlFileSink` calls fsync."""

    ALWAYS = "always"  # before every write returns
    INTERVAL = "interval"  # group commit: a background thread, at most ``flush_interval`` after a write


class JsonlFileSink:
    """Append-only JSONL file, one canonical record per line.

    Every record is handed to the kernel with write(2) before :meth:`write` returns, so it
    survives a crash of this process. With ``fsync=ALWAYS`` it is also fsynced before returning;
    with ``fsync=INTERVAL`` a background thread fsyncs at most ``flush_interval`` seconds later (or
    once ``flush_records`` are pending), so a power loss can lose that window. :meth:`sync`
    returns the byte offset up to which the file is known to be on disk.

    A failed write calls ``on_error`` and raises :class:`AuditWriteError`. A failed fsync calls
    ``on_fsync_error`` (default ``on_error``) and makes the next :meth:`write` raise, so it cannot
    go unnoticed; nothing is silently dropped.
    """

    def __init__(self, path: Path, *, on_error: Callable[[OSError], None] | None = None,
                 fsync: FsyncMode = FsyncMode.ALWAYS, flush_interval: float = 0.05,
                 flush_records: int = 256, on_fsync_error: Callable[[OSError], None] | None = None,
                 max_bytes: int | None = None, max_files: int = DEFAULT_MAX_FILES) -> None:
        if flush_interval <= 0 or flush_records < 1:
            raise ValueError("audit: flush_interval and flush_records must be positive")
        if (max_bytes is not None and max_bytes < MAX_LINE_BYTES) or max_files < 1:
            raise ValueError(f"audit: max_bytes must be at least {MAX_LINE_BYTES} and max_files at least 1")
        self.path = path
        self._max_bytes = max_bytes
        self._max_files = max_files
        self._base = 0  # trail offset of the active file's first byte (set when it is opened)
        self._on_error = on_error
        self._on_fsync_error = on_fsync_error or on_error
        self._mode = FsyncMode(fsync)
        self._interval = flush_interval
        self._max_pending = flush_records
        self._cond = threading.Condition()
        self._sync_lock = threading.Lock()  # one fsync at a time, so the durable offset only grows
        self._fd: int | None = None
        self._end = 0  # file size after our last write
        self._durable = 0  # bytes known to be fsynced
        self._pending = 0  # records written since the last fsync began
        self._failed: OSError | None = None  # a background fsync error, raised by the next write
        self._flusher: threading.Thread | None = None
        self._closed = False

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record (fsynced now, or by the flusher; see the class docstring)."""
        self._write_line(canonical_json(record) + b"\n")

    def write_canonical(self, text: str) -> None:
        """:meth:`write` of a record given as its canonical JSON text (one line, no newline)."""
        self._write_line(f"{text}\n".encode())

    def _write_line(self, line: bytes) -> None:
        with self._cond:
            try:
                if self._failed is not None:
                    self._raise_failed_fsync()
                fd = self._fd if self._fd is not None else self._open()
                if self._max_bytes is not None and self._end > 0 and self._end + len(line) > self._max_bytes:
                    fd = self._rotate(fd)
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(f"short write ({written} of {len(line)} bytes)")
                self._end += written
                if self._mode is FsyncMode.ALWAYS:
                    os.fsync(fd)
                    self._durable = self._end
                else:
                    self._pending += 1
                    if self._flusher is None:
                        self._start_flusher()
                    if self._pending in (1, self._max_pending):  # start the interval / flush a full batch now
                        self._cond.notify()
            except OSError as err:
                raise self._error(err, "write to") from err

    def sync(self) -> int:
        """fsync everything written so far; the trail offset known to be on disk (AuditWriteError on failure).

        Offsets count the bytes of the whole trail: rotated files first, then the active one.
        """
        with self._sync_lock:
            with self._cond:
                if self._fd is None and not self.path.exists():
                    return self._base if self._closed else _trail_files(self.path)[1]
                try:
                    fd = os.dup(self._open())  # a rotation may close ours while we fsync
                except OSError as err:
                    raise self._error(err, "open") from err
                base, end, durable, self._pending = self._base, self._end, self._durable, 0
            try:
                if end > durable:
                    try:
                        os.fsync(fd)
                    except OSError as err:
                        with self._cond:
                            self._failed = err
                        if self._on_fsync_error is not None:
                            self._on_fsync_error(err)
                        raise AuditWriteError(
                            f"audit: cannot fsync {str(self.path)!r}: {err.strerror or err}") from err
                    with self._cond:
                        if self._base == base:  # else the file rotated and was fsynced whole
                            self._durable = max(self._durable, end)  # an ALWAYS write may have gone further
            finally:
                os.close(fd)
            with self._cond:
                return self._base + self._durable

    def read_from(self, offset: int, limit: int, size: int) -> tuple[bytes, int]:
        """Up to ``size`` bytes of the trail from ``offset`` to ``limit``, from one file; (data, its offset).

        The offset returned is later than ``offset`` when the file holding it was rotated away
        (deleted beyond ``max_files``): reading resumes at the oldest file kept.
        """
        with self._cond:  # no rotation between choosing the file and opening it
            rotated, base = _trail_files(self.path)
            if self._fd is not None:
                base = self._base
            files = [*rotated, (base, self.path)]
            end = base + (self._end if self._fd is not None else _size(self.path))
            starts = [start for start, _ in files]
            chosen = next((i for i in range(len(files) - 1, -1, -1) if starts[i] <= offset), 0)
            start, file = files[chosen]
            offset = max(offset, start)
            stop = min(limit, starts[chosen + 1] if chosen + 1 < len(files) else end)
            try:
                fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return b"", offset
        try:
            return os.pread(fd, max(0, min(size, stop - offset)), offset - start), offset
        finally:
            os.close(fd)

    def close(self) -> None:
        """Stop the flusher, fsync what is pending and close the file."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._flusher is not None:
            self._flusher.join()
        # never opened (nothing written or synced) or already closed: nothing of ours to fsync, and
        # sync() would reopen the file and report "audit sink is closed" through on_error
        if self._fd is not None:
            with contextlib.suppress(AuditWriteError):  # already reported through on_error
                self.sync()
        with self._cond:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _open(self) -> int:
        if self._fd is None:
            if self._closed:
                raise OSError("audit sink is closed")
            self._base = _trail_files(self.path)[1]
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            # _durable stays 0: the first sync also covers what an earlier run left in the page cache
            self._fd, self._end, self._durable = fd, os.fstat(fd).st_size, 0
        return self._fd

    def _rotate(self, fd: int) -> int:
        """Close the full active file under its trail offset, drop the oldest beyond max_files, open a new one.

        The new file's first record chains to the old file's last, like any next record.
        """
        os.fsync(fd)  # a rotated file is whole on disk: sync() then counts all of it as durable
        os.close(fd)
        self._fd = None
        os.rename(self.path, _rotated_name(self.path, self._base))
        rotated, _ = _trail_files(self.path)
        for _, old in rotated[:-self._max_files]:
            old.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)
        return self._open()

    def _raise_failed_fsync(self) -> None:
        failed, self._failed = self._failed, None
        if failed is not None:
            raise OSError(failed.errno, f"an earlier fsync failed, records may not be on disk: {failed.strerror}")

    def _error(self, err: OSError, what: str) -> AuditWriteError:
        if self._on_error is not None:
            self._on_error(err)
        return AuditWriteError(f"audit: cannot {what} {str(self.path)!r}: {err.strerror or err}")

    def _start_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_loop, name="audit-fsync", daemon=True)
            self._flusher.start()

    def _flush_loop(self) -> None:
        while self._wait_for_batch():
            with contextlib.suppress(AuditWriteError):  # on_error logged it; the next write raises it
                self.sync()

    def _wait_for_batch(self) -> bool:
        """Block until records are pending, then up to ``flush_interval`` more; False once closed."""
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            deadline = time.monotonic() + self._interval
            while self._pending < self._max_pending and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return not self._closed


class AuditLog:
    """Seals events into the chain and writes them; the chain advances only after a durable write."""

    def __init__(self, sink: AuditSink, *, last: Mapping[str, Any] | None = None) -> None:
        self._sink = sink
        # decided once: a sink that takes canonical text gets the text sealing already produced
        self._write_text = sink.write_canonical if isinstance(sink, CanonicalAuditSink) else None
        self._seq = 0 if last is None else int(last["seq"]) + 1
        self._prev = GENESIS_HASH if last is None else str(last["hash"])

    @classmethod
    def resume(cls, sink: AuditSink, records: Sequence[Mapping[str, Any]], *,
               after: Mapping[str, Any] | None = None) -> AuditLog:
        """Continue after ``records`` (e.g. the sink's file) once they verify.

        ``after``: the record ``records`` continue from (the last one of the file rotated out
        before them); None: they start the chain.

        Raises:
            AuditChainError: the existing records are broken; the caller decides what to do.
        """
        if after is None:
            result = verify_chain(records)
        else:
            result = verify_chain(records, prev_hash=str(after.get("hash")), first_seq=int(after.get("seq", -2)) + 1)
        if not result.ok:
            raise AuditChainError(result)
        return cls(sink, last=records[-1] if records else after)

    @property
    def head(self) -> tuple[int, str]:
        """(next seq, hash of the last record)."""
        return self._seq, self._prev

    def append(self, event: AuditEvent) -> dict[str, Any]:
        """Seal, write, then advance; raises :class:`AuditWriteError` without advancing."""
        record, text = _seal(event, self._seq, self._prev)
        if self._write_text is not None:
            self._write_text(text)
        else:
            self._sink.write(record)
        self._seq, self._prev = self._seq + 1, record["hash"]
        return record

    def write(self, event: AuditEvent, *, at: datetime | None = None) -> None:
        """:meth:`append` of ``event`` stamped ``at`` (``event.at(at)``), without building the record.

        For a repeated event on a hot path: with a :class:`CanonicalAuditSink` no record dict and
        no event copy is made; what is written is the same as ``append(event.at(at))`` writes.
        """
        if self._write_text is None:
            self.append(event if at is None else event.at(at))
            return
        digest, text = _seal_text(event, self._seq, self._prev, event.time if at is None else format_time(at))
        self._write_text(text)
        self._seq, self._prev = self._seq + 1, digest


__all__ = [
    "GENESIS_HASH",
    "AuditChainError",
    "AuditEvent",
    "AuditLog",
    "AuditSecretError",
    "AuditSink",
    "AuditWriteError",
    "BreakKind",
    "CanonicalAuditSink",
    "FsyncMode",
    "JsonlFileSink",
    "Outcome",
    "VerifyResult",
    "build_event",
    "canonical_json",
    "format_time",
    "last_rotated_record",
    "load_jsonl",
    "parse_jsonl",
    "record_hash",
    "seal_record",
    "seal_record_text",
    "trail_files",
    "verify_chain",
    "verify_trail",
]

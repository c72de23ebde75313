"""The shared forwarder core (spiffe_py.audit_forward): batches, saved position, retry with backoff, metric hooks.

A refused caller (PERMISSION_DENIED, UNAUTHENTICATED) is logged once and retried rarely.

A real trail (JsonlFileSink + AuditLog in a temporary directory); only the RPC is a stand-in,
as the core takes it injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spiffe_py import audit_forward
from spiffe_py.audit import AuditLog, AuditWriteError, JsonlFileSink, build_event
from spiffe_py.audit_forward import MAX_BATCH, ForwardHooks, Send, TrailForwarder, split_batch
from spiffe_py.errors import SpiffeError

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Server:
    """Records every batch; fails the first ``failures`` calls as an unreachable server would."""

    def __init__(self, failures: int = 0) -> None:
        self.batches: list[list[str]] = []
        self.failures = failures

    async def send(self, records: list[str]) -> int:
        if self.failures:
            self.failures -= 1
            raise AuditWriteError("server unreachable")
        self.batches.append(records)
        return len(records)

    async def connect(self) -> Send:
        return self.send


class CallError(SpiffeError):
    """A failed call as the agent's and the broker's clients raise it: the gRPC status name in ``status``."""

    def __init__(self, status: str) -> None:
        self.status = status
        super().__init__(f"server said {status}")


class ScriptedServer:
    """Fails the calls as ``script`` says (an error, or None to accept); accepts once it ran out."""

    def __init__(self, script: list[Exception | None]) -> None:
        self.script = script
        self.calls: list[float] = []  # time.monotonic() of each call
        self.batches: list[list[str]] = []

    async def send(self, records: list[str]) -> int:
        self.calls.append(time.monotonic())
        outcome = self.script.pop(0) if self.script else None
        if outcome is not None:
            raise outcome
        self.batches.append(records)
        return len(records)

    async def connect(self) -> Send:
        return self.send


async def until(done: Callable[[], bool], seconds: float = 3.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if done():
            return
        await asyncio.sleep(0.01)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def append(log: AuditLog, n: int, first: int = 0) -> None:
    for i in range(first, first + n):
        log.append(
            build_event(
                now=NOW,
                actor="broker",
                spiffe_id="spiffe://example.org/ai",
                selectors=(),
                decision="allow",
                reason=f"r{i}",
                method="BrokerProxy",
            )
        )


def trail(tmp_path: Path, n: int) -> tuple[JsonlFileSink, AuditLog]:
    sink = JsonlFileSink(tmp_path / "audit.jsonl")
    log = AuditLog(sink)
    append(log, n)
    return sink, log


def test_split_batch_keeps_complete_lines_and_at_most_max_batch() -> None:
    assert split_batch(b'{"a":1}\n{"b":', 10) == (['{"a":1}'], 18)
    lines, end = split_batch(b"{}\n" * (MAX_BATCH + 5), 0)
    assert len(lines) == MAX_BATCH and end == 3 * MAX_BATCH


async def test_batches_go_out_in_order_and_the_position_survives_a_restart(tmp_path: Path) -> None:
    sink, _ = trail(tmp_path, MAX_BATCH + 20)
    counted: list[int] = []
    forwarder = TrailForwarder(sink, tmp_path / "pos", hooks=ForwardHooks(forwarded=counted.append))
    server = Server(failures=1)
    with pytest.raises(AuditWriteError):
        await forwarder.forward_once(server.send)
    assert forwarder.position() == 0 and not (tmp_path / "pos").exists()  # nothing acknowledged, nothing moved
    assert await forwarder.forward_once(server.send) == MAX_BATCH
    restarted = TrailForwarder(sink, tmp_path / "pos")
    assert restarted.position() == forwarder.position() > 0
    assert await restarted.forward_once(server.send) == 20
    assert await restarted.forward_once(server.send) == 0
    assert [json.loads(line)["seq"] for batch in server.batches for line in batch] == list(range(MAX_BATCH + 20))
    assert counted == [MAX_BATCH] and restarted.position() == sink.sync()
    sink.close()


async def test_forward_forever_retries_with_backoff_then_sends_what_was_appended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_forward, "FIRST_BACKOFF", 0.01)
    sink, log = trail(tmp_path, 3)
    failures: list[Exception] = []
    forwarder = TrailForwarder(
        sink, tmp_path / "pos", hooks=ForwardHooks(failed=failures.append), forward_interval=0.01
    )
    server = Server(failures=2)
    task = asyncio.create_task(forwarder.forward_forever(server.connect))
    for _ in range(300):
        if server.batches:
            break
        await asyncio.sleep(0.01)
    log.append(
        build_event(
            now=NOW, actor="broker", spiffe_id=None, selectors=(), decision="deny", reason="late", method="BrokerProxy"
        )
    )
    forwarder.wake()
    for _ in range(300):
        if len(server.batches) == 2:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task  # stopped before the sink closes under it
    sink.close()
    assert [len(b) for b in server.batches] == [3, 1] and len(failures) == 2
    assert json.loads(server.batches[1][0])["reason"] == "late"


async def test_a_refused_forwarder_waits_the_long_interval_not_the_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_forward, "FIRST_BACKOFF", 0.01)
    monkeypatch.setattr(audit_forward, "REFUSED_RETRY", 0.5)
    sink, _ = trail(tmp_path, 2)
    forwarder = TrailForwarder(sink, tmp_path / "pos", forward_interval=0.01)
    server = ScriptedServer([CallError("PERMISSION_DENIED")])
    task = asyncio.create_task(forwarder.forward_forever(server.connect))
    await until(lambda: bool(server.batches))
    await stop(task)
    sink.close()
    assert len(server.calls) == 2 and [len(b) for b in server.batches] == [2]
    assert server.calls[1] - server.calls[0] >= 0.5 - 0.01  # not FIRST_BACKOFF


async def test_repeated_refusals_log_one_error_and_a_later_success_resumes_from_the_saved_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(audit_forward, "REFUSED_RETRY", 0.02)
    caplog.set_level(logging.DEBUG, logger="spiffe_py.audit_forward")
    sink, log = trail(tmp_path, 3)
    failures: list[Exception] = []
    forwarder = TrailForwarder(
        sink, tmp_path / "pos", hooks=ForwardHooks(failed=failures.append), forward_interval=0.01
    )
    refusals: list[Exception | None] = [CallError("PERMISSION_DENIED"), CallError("UNAUTHENTICATED")] * 2
    server = ScriptedServer([None, *refusals])
    task = asyncio.create_task(forwarder.forward_forever(server.connect))
    await until(lambda: bool(server.batches))
    saved = forwarder.position()
    append(log, 2, first=3)  # refused four times, then taken
    forwarder.wake()
    await until(lambda: len(server.batches) == 2)
    await stop(task)
    assert 0 < saved < forwarder.position() == sink.sync()
    sink.close()
    assert [[json.loads(line)["seq"] for line in batch] for batch in server.batches] == [[0, 1, 2], [3, 4]]
    assert len(server.calls) == 6 and failures == refusals
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and caplog.records[0].levelno == logging.ERROR
    assert "(PERMISSION_DENIED)" in errors[0] and "[audit] forwarders" in errors[0]
    assert "forwarding resumed" in caplog.records[-1].getMessage()


async def test_an_unavailable_server_still_gets_the_short_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(audit_forward, "FIRST_BACKOFF", 0.01)  # REFUSED_RETRY stays 600 s: the test would time out
    sink, _ = trail(tmp_path, 1)
    forwarder = TrailForwarder(sink, tmp_path / "pos", forward_interval=0.01)
    server = ScriptedServer([CallError("UNAVAILABLE"), CallError("DEADLINE_EXCEEDED"), OSError("disk")])
    task = asyncio.create_task(forwarder.forward_forever(server.connect))
    await until(lambda: bool(server.batches))
    await stop(task)
    sink.close()
    assert len(server.batches) == 1
    gaps = [b - a for a, b in zip(server.calls, server.calls[1:], strict=False)]
    assert gaps[0] >= 0.01 - 0.005 and gaps[1] >= 0.02 - 0.005 and max(gaps) < 1  # doubling from FIRST_BACKOFF
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 3

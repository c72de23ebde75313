"""The shared forwarder core (spiffe_py.audit_forward): batches, saved position, retry with backoff, metric hooks.

A real trail (JsonlFileSink + AuditLog in a temporary directory); only the RPC is a stand-in,
as the core takes it injected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spiffe_py import audit_forward
from spiffe_py.audit import AuditLog, AuditWriteError, JsonlFileSink, build_event
from spiffe_py.audit_forward import MAX_BATCH, ForwardHooks, Send, TrailForwarder, split_batch

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


def trail(tmp_path: Path, n: int) -> tuple[JsonlFileSink, AuditLog]:
    sink = JsonlFileSink(tmp_path / "audit.jsonl")
    log = AuditLog(sink)
    for i in range(n):
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

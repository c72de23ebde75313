"""Agent audit trail: group commit settings and batched forwarding (issue 6 acceptance 5)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from spiffe_agent import audit as agent_audit
from spiffe_agent.audit import MAX_BATCH, POSITION_FILE, AgentAudit
from spiffe_agent.errors import NotReadyError
from spiffe_py.audit import AuditWriteError, build_event, load_jsonl, verify_chain
from tests.unit.agent.test_guard import NOW


class Server:
    """Records every ForwardAudit call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def forward_audit(self, records: list[str]) -> int:
        self.calls.append(records)
        return len(records)


def fill(audit: AgentAudit, n: int) -> None:
    for i in range(n):
        audit.append(build_event(now=NOW, actor="agent", spiffe_id="spiffe://example.org/w", selectors=["unix:uid:0"],
                                 decision="allow", reason=f"r{i}", method="FetchJWTSVID"))


async def test_forwarding_is_batched_and_the_position_saved_per_batch(tmp_path: Path) -> None:
    audit = AgentAudit.open(tmp_path)
    fill(audit, MAX_BATCH + 100)
    server = Server()
    assert await audit.forward_once(server) == MAX_BATCH
    saved = int((tmp_path / POSITION_FILE).read_text())
    assert saved == audit.position() > 0
    assert await audit.forward_once(server) == 100
    assert await audit.forward_once(server) == 0
    assert [len(c) for c in server.calls] == [MAX_BATCH, 100]
    seqs = [json.loads(line)["seq"] for call in server.calls for line in call]
    assert seqs == list(range(MAX_BATCH + 100))
    audit.close()
    assert AgentAudit.open(tmp_path).position() == audit.path.stat().st_size


async def test_forward_forever_sends_what_accumulated_in_one_call(tmp_path: Path) -> None:
    audit = AgentAudit.open(tmp_path)
    fill(audit, 10)
    server = Server()
    task = asyncio.create_task(audit.forward_forever(lambda: server))
    for _ in range(500):
        if server.calls:
            break
        await asyncio.sleep(0.01)
    fill(audit, 3)  # wakes the forwarder, which waits one flush interval, then sends the 3 together
    for _ in range(500):
        if len(server.calls) == 2:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    assert [len(c) for c in server.calls] == [10, 3]
    audit.close()


async def test_forwarder_waits_quietly_until_attested(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_audit, "NOT_ATTESTED_POLL", 0.01)
    audit = AgentAudit.open(tmp_path)
    fill(audit, 4)
    server = Server()
    attempts = 0

    def client() -> Server:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise NotReadyError("agent: not attested yet")
        return server

    caplog.set_level(logging.DEBUG, logger="spiffe_agent.audit")
    task = asyncio.create_task(audit.forward_forever(client))
    for _ in range(500):
        if server.calls:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    audit.close()
    assert [len(c) for c in server.calls] == [4]
    waits = [r for r in caplog.records if "waits for attestation" in r.getMessage()]
    assert len(waits) == 2 and {r.levelno for r in waits} == {logging.DEBUG}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_always_mode_and_records_on_disk_after_close(tmp_path: Path) -> None:
    audit = AgentAudit.open(tmp_path, fsync="always")
    fill(audit, 2)
    assert audit.sync() == audit.path.stat().st_size
    audit.close()
    records = load_jsonl(audit.path)
    assert len(records) == 2 and verify_chain(records).ok
    with pytest.raises(ValueError, match="'sometimes' is not a valid FsyncMode"):
        AgentAudit.open(tmp_path, fsync="sometimes")


def test_a_write_error_fails_the_request(tmp_path: Path) -> None:
    audit = AgentAudit.open(tmp_path)
    audit.close()
    with pytest.raises(AuditWriteError, match="audit sink is closed"):
        fill(audit, 1)

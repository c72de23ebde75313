"""Size-based rotation of the local audit trail: the hash chain runs on across files and stays verifiable.

The active file rotates to ``<name>.<trail offset>`` once the next record would take it past
``max_bytes``; the new file's first record chains to the old file's last. Only ``max_files``
rotated files are kept. ``verify_trail`` and ``spiffe-server audit verify --file`` check the
whole trail, so an edit or a removed file anywhere in it is found.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spiffe_agent.audit import AgentAudit
from spiffe_py.audit import (
    MAX_LINE_BYTES,
    AuditChainError,
    AuditLog,
    BreakKind,
    FsyncMode,
    JsonlFileSink,
    build_event,
    last_rotated_record,
    load_jsonl,
    trail_files,
    verify_trail,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
MAX_BYTES = MAX_LINE_BYTES  # the smallest size a sink accepts: about 300 records of this test per file
PAD = "x" * 600


def event(i: int) -> object:
    return build_event(now=NOW + timedelta(milliseconds=i), actor="agent", spiffe_id="spiffe://example.org/w",
                       selectors=["unix:uid:0"], decision="allow", reason=f"r{i}", method="FetchJWTSVID",
                       details={"pad": PAD})


def write_trail(path: Path, n: int, *, max_files: int = 8, start: int = 0) -> JsonlFileSink:
    sink = JsonlFileSink(path, fsync=FsyncMode.INTERVAL, flush_interval=60, max_bytes=MAX_BYTES, max_files=max_files)
    log = AuditLog.resume(sink, load_jsonl(path) if path.exists() else [], after=last_rotated_record(path))
    for i in range(start, start + n):
        log.append(event(i))  # type: ignore[arg-type]
    return sink


def test_rotation_keeps_the_chain_across_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path, 1000).close()
    files = trail_files(path)
    assert len(files) >= 3 and files[-1] == path
    assert all(f.stat().st_size <= MAX_BYTES for f in files)
    for older, newer in itertools.pairwise(files):
        last, first = load_jsonl(older)[-1], load_jsonl(newer)[0]
        assert (first["seq"], first["prev_hash"]) == (last["seq"] + 1, last["hash"])
    result, listed = verify_trail(path)
    assert (result.ok, result.count) == (True, 1000)
    assert [f for f, _ in listed] == files


def test_the_next_run_continues_the_chain_from_the_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path, 400).close()
    write_trail(path, 400, start=400).close()  # resumes from the active file and the last rotated record
    result, _ = verify_trail(path)
    assert (result.ok, result.count) == (True, 800)


def test_only_max_files_rotated_files_are_kept_and_the_rest_still_verifies(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path, 2000, max_files=2).close()
    files = trail_files(path)
    assert len(files) == 3
    result, _ = verify_trail(path)
    assert result.ok and 0 < result.count < 2000
    assert load_jsonl(files[0])[0]["seq"] > 0  # the oldest kept file starts mid-chain


def test_tampering_with_a_rotated_file_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path, 1000).close()
    rotated = trail_files(path)[1]
    text = rotated.read_text()
    victim = load_jsonl(rotated)[5]
    rotated.write_text(text.replace(f'"reason":"r{victim["seq"]}"', '"reason":"rX"', 1))
    result, _ = verify_trail(path)
    assert (result.ok, result.seq, result.kind) == (False, victim["seq"], BreakKind.EDITED)


def test_removing_a_rotated_file_from_the_middle_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path, 1000).close()
    middle = trail_files(path)[1]
    first_missing = load_jsonl(middle)[0]["seq"]
    middle.unlink()
    result, _ = verify_trail(path)
    assert (result.ok, result.kind) == (False, BreakKind.REMOVED)
    assert f"seq {first_missing}.." in result.reason


def test_a_forged_active_file_is_refused_when_the_agent_resumes(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path, 400).close()
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[1:]))  # the first record after the rotation is gone
    with pytest.raises(AuditChainError):
        AgentAudit.open(tmp_path)


class Server:
    def __init__(self) -> None:
        self.records: list[dict[str, object]] = []

    async def forward_audit(self, records: list[str]) -> int:
        self.records.extend(json.loads(r) for r in records)
        return len(records)


async def test_the_agent_forwards_every_record_across_rotations(tmp_path: Path) -> None:
    audit = AgentAudit.open(tmp_path, max_file_bytes=MAX_BYTES)
    server = Server()
    for i in range(900):
        audit.append(event(i))  # type: ignore[arg-type]
        if i == 100:
            assert await audit.forward_once(server) == 101  # the position is in a file that rotates later
    while await audit.forward_once(server):
        pass
    assert len(trail_files(audit.path)) >= 3
    assert [r["seq"] for r in server.records] == list(range(900))
    audit.close()
    reopened = AgentAudit.open(tmp_path, max_file_bytes=MAX_BYTES)  # the position is a trail offset
    assert await reopened.forward_once(server) == 0
    reopened.close()


def test_cli_verify_file_follows_rotated_files_and_names_the_tampered_one(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_trail(path, 1000).close()
    cli = [sys.executable, "-m", "spiffe_server.cli", "audit", "verify", "--file", str(path)]
    ok = subprocess.run(cli, capture_output=True, text=True, timeout=60, check=False)
    assert ok.returncode == 0 and "audit trail OK: 1000 records in" in ok.stdout
    rotated = trail_files(path)[0]
    rotated.write_text(rotated.read_text().replace('"reason":"r7"', '"reason":"r8"', 1))
    broken = subprocess.run([*cli, "--output", "json"], capture_output=True, text=True, timeout=60, check=False)
    assert broken.returncode == 1
    assert json.loads(broken.stdout)["file"] == str(rotated) and json.loads(broken.stdout)["seq"] == 7

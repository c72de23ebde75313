"""JsonlFileSink durability modes: group commit (fsync="interval"), fsync="always", and fsync failures."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spiffe_py.audit import AuditLog, AuditWriteError, FsyncMode, JsonlFileSink, load_jsonl, verify_chain
from tests.unit.audit.test_audit_chain import event


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A FIFO with an open reader: write(2) succeeds, fsync(2) fails with EINVAL (a real failing fsync)."""
    path = tmp_path / "audit.fifo"
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    yield path
    os.close(reader)


def test_interval_mode_writes_before_returning_and_sync_reports_the_durable_offset(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlFileSink(path, fsync=FsyncMode.INTERVAL, flush_interval=60)
    log = AuditLog(sink)
    for i in range(3):
        log.append(event(i))
    # written (a crash of this process loses nothing) before any fsync happened
    assert [r["seq"] for r in load_jsonl(path)] == [0, 1, 2]
    assert sink.sync() == path.stat().st_size
    sink.close()
    assert verify_chain(load_jsonl(path)).ok
    with pytest.raises(AuditWriteError, match="audit sink is closed"):
        sink.write({"seq": 3})


def test_resumed_sink_counts_earlier_records_as_durable_once_synced(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = JsonlFileSink(path, fsync=FsyncMode.INTERVAL)
    AuditLog(first).append(event(0))
    first.close()
    size = path.stat().st_size
    second = JsonlFileSink(path, fsync=FsyncMode.INTERVAL)
    assert second.sync() == size
    second.close()
    assert JsonlFileSink(tmp_path / "missing.jsonl").sync() == 0


def test_always_mode_is_durable_when_write_returns(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlFileSink(path, fsync=FsyncMode.ALWAYS)
    AuditLog(sink).append(event(0))
    # fsynced inside write(): the durable offset already covers the record before any sync() call
    # (interval mode would still be at 0 here; sync() below would hide the difference)
    assert sink._durable == path.stat().st_size > 0
    assert sink.sync() == path.stat().st_size  # nothing was pending
    sink.close()


def test_failed_fsync_is_reported_and_fails_the_next_write(fifo: Path) -> None:
    write_errors: list[OSError] = []
    fsync_errors: list[OSError] = []
    sink = JsonlFileSink(fifo, fsync=FsyncMode.INTERVAL, flush_interval=60,
                         on_error=write_errors.append, on_fsync_error=fsync_errors.append)
    log = AuditLog(sink)
    log.append(event(0))  # write(2) to the FIFO works
    with pytest.raises(AuditWriteError, match=r"audit: cannot fsync .*Invalid argument"):
        sink.sync()
    assert [e.errno for e in fsync_errors] == [22]
    with pytest.raises(AuditWriteError, match="an earlier fsync failed, records may not be on disk"):
        log.append(event(1))
    assert log.head[0] == 1  # the refused record did not advance the chain
    assert len(write_errors) == 1


def test_always_mode_fsync_failure_fails_the_write(fifo: Path) -> None:
    errors: list[OSError] = []
    log = AuditLog(JsonlFileSink(fifo, fsync=FsyncMode.ALWAYS, on_error=errors.append))
    with pytest.raises(AuditWriteError, match="Invalid argument"):
        log.append(event(0))
    assert [e.errno for e in errors] == [22]
    assert log.head[0] == 0


def test_background_flusher_fsyncs_a_full_batch_without_being_asked(fifo: Path) -> None:
    """flush_records=1: the flusher fsyncs at once; its failure (EINVAL on a FIFO) reaches the next write."""
    fsync_errors: list[OSError] = []
    sink = JsonlFileSink(fifo, fsync=FsyncMode.INTERVAL, flush_interval=60, flush_records=1,
                         on_fsync_error=fsync_errors.append)
    log = AuditLog(sink)
    log.append(event(0))
    for _ in range(500):  # wait for the flusher thread (nobody else calls sync here)
        if fsync_errors:
            break
        time.sleep(0.01)
    assert [e.errno for e in fsync_errors] == [22]
    with pytest.raises(AuditWriteError, match="an earlier fsync failed"):
        log.append(event(1))
    sink.close()


def test_bad_flush_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="flush_interval and flush_records must be positive"):
        JsonlFileSink(tmp_path / "a", flush_interval=0)


def test_closing_a_sink_that_wrote_nothing_reports_no_error(tmp_path: Path) -> None:
    """An agent restarted on an existing trail and stopped before any call must not log a write failure."""
    path = tmp_path / "audit.jsonl"
    AuditLog(JsonlFileSink(path)).append(event(0))
    errors: list[OSError] = []
    sink = JsonlFileSink(path, fsync=FsyncMode.INTERVAL, on_error=errors.append, on_fsync_error=errors.append)
    sink.close()
    sink.close()  # twice is harmless too
    assert errors == []
    with pytest.raises(AuditWriteError, match="audit sink is closed"):
        sink.write({"seq": 1})
    assert len(errors) == 1  # a real misuse after close is still reported

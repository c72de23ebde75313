"""Signed checkpoints and exported heads anchor the central audit chain against a rewrite by a datastore insider.

The hash chain alone cannot tell a cut-and-rehashed chain from an honest one: whoever can
write the database can recompute every hash. A checkpoint (seq, hash, time) signed with the
server's audit key, which is not in the database, pins the records up to it; an exported
head kept elsewhere pins the chain up to the moment of export.
"""

from __future__ import annotations

import json
import sqlite3
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spiffe_py.audit import AuditEvent, BreakKind, build_event
from spiffe_py.clock import ManualClock
from spiffe_server.audit import CHECKPOINT_KEY_FILE, CentralAudit, CheckpointSigner, verify_store
from spiffe_server.datastore import AuditCheckpoint, DataStore, open_datastore
from spiffe_server.metrics import REGISTRY
from tests.support.server_proc import ServerProc

NOW = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
EVERY = 5  # a checkpoint at seq 5, 10, ...


def event(n: int, reason: str = "") -> AuditEvent:
    return build_event(now=NOW + timedelta(seconds=n), actor="server", spiffe_id="spiffe://example.org/w",
                       selectors=["unix:uid:1"], decision="deny" if n % 3 == 0 else "allow",
                       reason=reason or f"r{n}", method="MintX509SVID", serial=f"{n:x}")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ds.sqlite3"


@pytest.fixture
def store(db: Path) -> Iterator[DataStore]:
    s = open_datastore(db)
    yield s
    s.close()


@pytest.fixture
def signer(tmp_path: Path) -> CheckpointSigner:
    return CheckpointSigner.load_or_create(tmp_path / "keys" / CHECKPOINT_KEY_FILE)


def chain_of(store: DataStore, signer: CheckpointSigner | None) -> CentralAudit:
    return CentralAudit(store, clock=ManualClock(NOW), signer=signer, checkpoint_every=EVERY)


def verify(store: DataStore, signer: CheckpointSigner) -> object:
    return verify_store(store.iter_audit(), store.iter_audit_checkpoints(), signer.public_key)


def _sql(db: Path, *statements: str) -> None:
    conn = sqlite3.connect(db)
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def _cut_after(db: Path, seq: int) -> None:
    """What an insider does to hide records: delete the tail and wind the chain's counter back."""
    _sql(db, f"DELETE FROM audit WHERE seq > {seq}", f"UPDATE counters SET value = {seq} WHERE name = 'audit'")


def test_checkpoints_are_signed_at_every_nth_record_and_verify(store: DataStore, signer: CheckpointSigner) -> None:
    chain = chain_of(store, signer)
    chain.append([event(n) for n in range(1, 8)])
    chain.append([event(n) for n in range(8, 12)])
    assert [cp.seq for cp in store.iter_audit_checkpoints()] == [5, 10]
    result = verify(store, signer)
    assert (result.ok, result.count) == (True, 11)  # type: ignore[attr-defined]


def test_cutting_the_tail_across_a_checkpoint_and_rehashing_fails_verification(
    store: DataStore, db: Path, signer: CheckpointSigner
) -> None:
    chain_of(store, signer).append([event(n) for n in range(1, 9)])  # checkpoint at 5
    _cut_after(db, 3)
    # the rewritten tail is a consistent chain: sealed after seq 3 by a server without the key
    chain_of(store, None).append([event(n, reason="nothing to see") for n in range(4, 9)])
    assert verify_store(store.iter_audit()).ok  # the links alone cannot tell
    result = verify(store, signer)
    assert (result.ok, result.seq, result.kind) == (False, 5, BreakKind.EDITED)  # type: ignore[attr-defined]
    assert "not the one signed" in result.reason  # type: ignore[attr-defined]


def test_cutting_the_tail_across_a_checkpoint_without_refilling_it_fails_as_truncated(
    store: DataStore, db: Path, signer: CheckpointSigner
) -> None:
    chain_of(store, signer).append([event(n) for n in range(1, 9)])
    _cut_after(db, 4)
    result = verify(store, signer)
    assert (result.ok, result.kind) == (False, BreakKind.TRUNCATED)  # type: ignore[attr-defined]
    assert "tail was cut" in result.reason  # type: ignore[attr-defined]


def test_rewriting_a_record_before_a_checkpoint_and_rehashing_the_rest_fails(
    store: DataStore, db: Path, signer: CheckpointSigner
) -> None:
    chain_of(store, signer).append([event(n) for n in range(1, 7)])  # checkpoint at 5
    _cut_after(db, 1)
    chain_of(store, None).append([event(2, reason="rewritten")] + [event(n) for n in range(3, 7)])
    assert verify_store(store.iter_audit()).ok
    result = verify(store, signer)
    assert (result.ok, result.seq, result.kind) == (False, 5, BreakKind.EDITED)  # type: ignore[attr-defined]


def test_a_checkpoint_forged_with_another_key_fails(store: DataStore, db: Path, signer: CheckpointSigner,
                                                     tmp_path: Path) -> None:
    chain_of(store, signer).append([event(n) for n in range(1, 9)])
    _cut_after(db, 3)
    _sql(db, "DELETE FROM audit_checkpoints")
    chain_of(store, CheckpointSigner.load_or_create(tmp_path / "insider.key")).append(
        [event(n, reason="forged") for n in range(4, 9)])
    result = verify(store, signer)
    assert (result.ok, result.seq, result.kind) == (False, 5, BreakKind.EDITED)  # type: ignore[attr-defined]
    assert "not signed by this server's audit key" in result.reason  # type: ignore[attr-defined]


def test_a_server_whose_stored_chain_was_cut_under_it_raises_an_alert(
    store: DataStore, db: Path, signer: CheckpointSigner, caplog: pytest.LogCaptureFixture
) -> None:
    chain = chain_of(store, signer)
    chain.append([event(n) for n in range(1, 5)])
    _cut_after(db, 2)
    before = REGISTRY.get_sample_value("spiffe_server_audit_alerts_total", {"kind": "chain_shortened"}) or 0.0
    chain.append([event(5)])
    assert REGISTRY.get_sample_value("spiffe_server_audit_alerts_total", {"kind": "chain_shortened"}) == before + 1
    assert "AUDIT CHAIN SHORTENED: the stored chain ends at seq 2, this server saw seq 4" in caplog.text


def test_a_moved_head_is_checkpointed_on_demand_and_only_once(store: DataStore, signer: CheckpointSigner) -> None:
    chain = chain_of(store, signer)
    chain.append([event(1), event(2)])
    first = chain.checkpoint()
    assert first is not None and (first.seq, first.hash) == chain.head
    assert chain.checkpoint() is None  # the head did not move
    assert [cp.seq for cp in store.iter_audit_checkpoints()] == [2]
    assert chain_of(store, signer).checkpoint() is None  # a restarted server knows the last checkpoint


def test_the_audit_key_is_private_and_kept_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "keys" / CHECKPOINT_KEY_FILE
    first = CheckpointSigner.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = CheckpointSigner.load_or_create(path)
    checkpoint = again.sign(1, "a" * 64, NOW)
    assert verify_store([], [checkpoint], first.public_key).kind is BreakKind.TRUNCATED  # signed by the same key
    assert [p.name for p in path.parent.iterdir()] == [CHECKPOINT_KEY_FILE]  # nothing left aside


def test_a_tampered_checkpoint_time_breaks_its_signature(signer: CheckpointSigner) -> None:
    checkpoint = signer.sign(1, "a" * 64, NOW)
    moved = AuditCheckpoint(seq=1, hash="a" * 64, time=NOW + timedelta(days=1), signature=checkpoint.signature)
    assert "not signed" in verify_store([], [moved], signer.public_key).reason


# -- a real server: audit export-head and audit verify --anchor -----------------------------------


def test_verify_with_an_exported_head_fails_once_that_head_was_cut(tmp_path: Path) -> None:
    with ServerProc.start() as srv:
        for _ in range(3):
            srv.cli_json("token", "generate")
        anchor = tmp_path / "head.json"
        exported = srv.cli_json("audit", "export-head", "--write", str(anchor))
        assert exported["seq"] == 3 and json.loads(anchor.read_text()) == exported
        for _ in range(2):
            srv.cli_json("token", "generate")
        ok = srv.cli("audit", "verify", "--anchor", str(anchor))
        assert "contains the exported head seq 3" in ok.stdout
        db = srv.data_dir / "datastore.sqlite3"
        # cut from seq 3 on (the exported head included), then re-append through the server
        _cut_after(db, 2)
        srv.restart()
        srv.cli_json("token", "generate")
        srv.cli_json("token", "generate")
        cut = srv.cli("audit", "verify", "--anchor", str(anchor), check=False)
        assert cut.returncode == 1
        assert "does not contain the exported head" in cut.stderr
        assert "record seq 3 is not the exported head" in cut.stderr
        as_json = srv.cli("audit", "verify", "--anchor", str(anchor), "--output", "json", check=False)
        assert json.loads(as_json.stdout)["ok"] is False
        _cut_after(db, 1)
        gone = srv.cli("audit", "verify", "--anchor", str(anchor), check=False)
        assert gone.returncode == 1 and "has no record seq 3" in gone.stderr


def test_a_malformed_anchor_file_is_a_clear_error(tmp_path: Path) -> None:
    with ServerProc.start() as srv:
        bad = tmp_path / "bad.json"
        bad.write_text('{"seq": "x"}')
        result = srv.cli("audit", "verify", "--anchor", str(bad), check=False)
        assert result.returncode == 1 and "is not an exported audit head" in result.stderr
        assert "Traceback" not in result.stderr
        empty = srv.cli("audit", "export-head", check=False)
        assert empty.returncode == 1 and "chain is empty" in empty.stderr

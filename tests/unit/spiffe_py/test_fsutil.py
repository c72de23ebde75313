"""write_private against real directories: it never changes a directory that already exists."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from spiffe_py.fsutil import write_private


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_shared_sticky_directory_keeps_its_mode(tmp_path: Path) -> None:
    """Writing a key into a 1777 directory (like /tmp) must not turn it into 0700 and lock everyone else out."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    write_private(shared / "key.pem", b"secret")
    assert _mode(shared) == 0o1777
    assert _mode(shared / "key.pem") == 0o600
    assert (shared / "key.pem").read_bytes() == b"secret"


def test_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    os.chmod(out, 0o755)
    write_private(out / "token", b"t")
    assert _mode(out) == 0o755 and _mode(out / "token") == 0o600


def test_missing_directories_are_created_0700(tmp_path: Path) -> None:
    old = os.umask(0)  # even a permissive umask gives 0700
    try:
        write_private(tmp_path / "a" / "b" / "key.pem", b"k")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a") == 0o700 and _mode(tmp_path / "a" / "b") == 0o700
    assert _mode(tmp_path / "a" / "b" / "key.pem") == 0o600


def test_replacing_a_file_keeps_it_0600(tmp_path: Path) -> None:
    target = tmp_path / "key.pem"
    target.write_bytes(b"old")
    os.chmod(target, 0o644)
    write_private(target, b"new")
    assert target.read_bytes() == b"new" and _mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]  # no temp file left behind

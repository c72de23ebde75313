"""Small file helpers for keys and state (I/O shell).

Private material is written atomically with mode 0600 in a 0700 directory::

    write_private(data_dir / "agent-key.pem", key_pem)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_private(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically write secret bytes: file 0600, parent directory 0700."""
    p = Path(path)
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(p.parent, 0o700)
    _write_atomic(p, data, 0o600)


def write_public(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically write non-secret bytes with mode 0644."""
    _write_atomic(Path(path), data, 0o644)

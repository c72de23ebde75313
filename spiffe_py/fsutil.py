"""Small file helpers for keys and state (I/O shell).

Private material is written atomically with mode 0600; directories it creates are 0700::

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


def _make_private_dirs(directory: Path) -> None:
    """Create the missing directories of ``directory``, each 0700; never touch one that exists.

    An existing directory keeps its mode: it may be shared (a 1777 ``/tmp``) or belong to
    someone else, and its mode is its owner's decision. Only what we create is ours to set.
    """
    missing = []
    while not directory.exists():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    for created in reversed(missing):
        try:
            os.mkdir(created, 0o700)
        except FileExistsError:  # made meanwhile by someone else: theirs, so left as it is
            continue
        os.chmod(created, 0o700)  # the umask may have cleared owner bits


def write_private(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically write secret bytes with mode 0600; missing parent directories are created 0700.

    Raises ``PermissionError`` (or another ``OSError``) when the directory is not writable.
    """
    p = Path(path)
    _make_private_dirs(p.parent)
    _write_atomic(p, data, 0o600)


def write_public(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically write non-secret bytes with mode 0644."""
    _write_atomic(Path(path), data, 0o644)

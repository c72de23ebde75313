"""Reading ``/proc`` (the only module of the agent that does).

Pure parsers (``parse_status``, ``parse_stat_start_time``) are separate from
the :class:`ProcFs` seam so attestors are tested with fake text::

    proc = LinuxProcFs()
    ids = parse_status(proc.status(pid))
    print(ids.euid, ids.egid, ids.groups)
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from spiffe_agent.errors import WorkloadAttestationError

_MAX_PROC_TEXT = 1 << 20  # /proc text files are small; cap what a read may return
_PROC_READ_CHUNK = 1 << 16
_HASH_CHUNK = 1 << 16
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def boot_ticks() -> int:
    """Clock ticks since boot now, the unit of a process's start time in ``/proc/<pid>/stat``."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * CLOCK_TICKS)


@dataclass(frozen=True, slots=True, order=True)
class ProcessKey:
    """One process instance: pid plus start time (clock ticks since boot), so pid reuse is told apart."""

    pid: int
    start_time: int


@dataclass(frozen=True, slots=True)
class ExeId:
    """The executable a process runs: the file (device, inode) behind ``/proc/<pid>/exe`` and its path."""

    dev: int
    ino: int
    path: str


@dataclass(frozen=True, slots=True)
class StatusIds:
    """Effective ids and supplementary groups from ``/proc/<pid>/status``."""

    euid: int
    egid: int
    groups: tuple[int, ...]


class StatusFile(Protocol):
    """``/proc/<pid>/status`` kept open: each read is the current text of the process it was opened for."""

    def read(self) -> str:
        """The current text; raises OSError (ESRCH) once the process is gone."""
        ...

    def close(self) -> None:
        """Release it (idempotent)."""
        ...


class ProcFs(Protocol):
    """Access to one process's ``/proc`` entries."""

    def status(self, pid: int) -> str:
        """Text of ``/proc/<pid>/status``."""
        ...

    def open_status(self, pid: int) -> StatusFile:
        """``/proc/<pid>/status`` held open (per connection: no open/close per call)."""
        ...

    def stat(self, pid: int) -> str:
        """Text of ``/proc/<pid>/stat``."""
        ...

    def cgroup(self, pid: int) -> str:
        """Text of ``/proc/<pid>/cgroup``."""
        ...

    def exe_path(self, pid: int) -> str:
        """Resolved path of ``/proc/<pid>/exe``."""
        ...

    def namespace(self, pid: int, kind: str) -> str:
        """Identity of its ``kind`` namespace: the ``/proc/<pid>/ns/<kind>`` link, e.g. ``mnt:[4026531841]``."""
        ...

    def exe_file(self, pid: int) -> tuple[int, int]:
        """(device, inode) of the file behind ``/proc/<pid>/exe``."""
        ...

    def exe_sha256(self, pid: int, size_limit: int) -> str:
        """Hex SHA-256 of the executable; ``size_limit`` > 0 caps the size hashed."""
        ...


def _ids(line: str, key: str) -> list[int]:
    try:
        return [int(v) for v in line.split(":", 1)[1].split()]
    except ValueError as err:
        raise WorkloadAttestationError(f"procfs: malformed {key} line in status: {line[:80]!r}") from err


def _status_ids(text: str, key: str) -> list[int] | None:
    # the first line starting with "<key>:"; "Name:" comes first and the kernel escapes a newline
    # in the command name, so no earlier text can fake such a line
    start = text.find(f"\n{key}:")
    if start < 0:
        return None
    start += 1
    end = text.find("\n", start)
    return _ids(text[start:] if end < 0 else text[start:end], key)


def parse_status(text: str) -> StatusIds:
    """Parse effective uid/gid (2nd field of ``Uid:``/``Gid:``) and ``Groups:``."""
    # find, not a walk over ~60 lines: this runs on every Workload API call
    text = "\n" + text
    uids, gids = _status_ids(text, "Uid") or [], _status_ids(text, "Gid") or []
    if len(uids) < 2 or len(gids) < 2:
        raise WorkloadAttestationError("procfs: status lacks Uid/Gid lines")
    return StatusIds(euid=uids[1], egid=gids[1], groups=tuple(_status_ids(text, "Groups") or ()))


def parse_stat_start_time(text: str) -> int:
    """Field 22 (starttime, clock ticks since boot) of ``/proc/<pid>/stat``."""
    # comm (field 2) may contain spaces and ')' so split after the LAST ')'
    _, sep, rest = text.rpartition(")")
    parts = rest.split()
    if not sep or len(parts) < 20:
        raise WorkloadAttestationError("procfs: malformed stat")
    try:
        return int(parts[19])
    except ValueError as err:
        raise WorkloadAttestationError("procfs: malformed starttime in stat") from err


def _pread_all(fd: int) -> str:
    """The whole file from offset 0 (procfs regenerates it on each read from 0), up to the cap.

    One pread of a 64 KiB chunk: a buffered read(_MAX_PROC_TEXT) allocates the whole cap on every
    call, which made up most of the per-call attestation cost.
    """
    data = os.pread(fd, _PROC_READ_CHUNK, 0)
    if len(data) == _PROC_READ_CHUNK:  # rare: a status with thousands of supplementary groups
        chunks = [data]
        size = len(data)
        while size <= _MAX_PROC_TEXT and (chunk := os.pread(fd, _PROC_READ_CHUNK, size)):
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    return data[:_MAX_PROC_TEXT].decode("utf-8", "replace")


class OpenStatusFile:
    """A held ``/proc/<pid>/status`` fd, read with pread from offset 0.

    The fd belongs to the process it was opened for: once that process is reaped, reads fail with
    ESRCH even if its pid was reused, so it never shows another process's ids.
    """

    __slots__ = ("_fd",)

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def read(self) -> str:
        if self._fd < 0:
            raise OSError(9, "status file is closed")
        return _pread_all(self._fd)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


class LinuxProcFs:
    """The real ``/proc`` (optionally rooted elsewhere, e.g. a host mount)."""

    def __init__(self, root: str = "/proc") -> None:
        self._root = Path(root)

    def _read(self, pid: int, name: str) -> str:
        try:
            fd = os.open(f"{self._root}/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                return _pread_all(fd)
            finally:
                os.close(fd)
        except OSError as err:
            raise WorkloadAttestationError(f"procfs: cannot read {name} of pid {pid!r}") from err

    def status(self, pid: int) -> str:
        return self._read(pid, "status")

    def open_status(self, pid: int) -> OpenStatusFile:
        try:
            return OpenStatusFile(os.open(f"{self._root}/{pid}/status", os.O_RDONLY | os.O_CLOEXEC))
        except OSError as err:
            raise WorkloadAttestationError(f"procfs: cannot read status of pid {pid!r}") from err

    def stat(self, pid: int) -> str:
        return self._read(pid, "stat")

    def cgroup(self, pid: int) -> str:
        return self._read(pid, "cgroup")

    def exe_path(self, pid: int) -> str:
        try:
            return os.readlink(self._root / str(pid) / "exe")
        except OSError as err:
            raise WorkloadAttestationError(f"procfs: cannot resolve exe of pid {pid!r}") from err

    def namespace(self, pid: int, kind: str) -> str:
        try:
            return os.readlink(self._root / str(pid) / "ns" / kind)
        except OSError as err:
            raise WorkloadAttestationError(f"procfs: cannot read the {kind} namespace of pid {pid!r}") from err

    def exe_file(self, pid: int) -> tuple[int, int]:
        try:
            st = os.stat(f"{self._root}/{pid}/exe")
        except OSError as err:
            raise WorkloadAttestationError(f"procfs: cannot resolve exe of pid {pid!r}") from err
        return st.st_dev, st.st_ino

    def exe_sha256(self, pid: int, size_limit: int) -> str:
        # hash through /proc/<pid>/exe, not the path: the path may have been replaced
        digest = hashlib.sha256()
        try:
            with (self._root / str(pid) / "exe").open("rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size_limit > 0 and size > size_limit:
                    raise WorkloadAttestationError(
                        f"procfs: executable of pid {pid!r} is {size} bytes, over the limit {size_limit}"
                    )
                while chunk := fh.read(_HASH_CHUNK):
                    digest.update(chunk)
        except OSError as err:
            raise WorkloadAttestationError(f"procfs: cannot hash exe of pid {pid!r}") from err
        return digest.hexdigest()

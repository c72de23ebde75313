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
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.errors import WorkloadAttestationError

_MAX_PROC_TEXT = 1 << 20  # /proc text files are small; cap what a read may return
_PROC_READ_CHUNK = 1 << 16
_HASH_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class StatusIds:
    """Effective ids and supplementary groups from ``/proc/<pid>/status``."""

    euid: int
    egid: int
    groups: tuple[int, ...]


class ProcFs(Protocol):
    """Access to one process's ``/proc`` entries."""

    def status(self, pid: int) -> str:
        """Text of ``/proc/<pid>/status``."""
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

    def exe_sha256(self, pid: int, size_limit: int) -> str:
        """Hex SHA-256 of the executable; ``size_limit`` > 0 caps the size hashed."""
        ...


def _ids(line: str, key: str) -> list[int]:
    try:
        return [int(v) for v in line.split(":", 1)[1].split()]
    except ValueError as err:
        raise WorkloadAttestationError(f"procfs: malformed {key} line in status: {line[:80]!r}") from err


_STATUS_KEYS = ("Uid:", "Gid:", "Groups:")


def parse_status(text: str) -> StatusIds:
    """Parse effective uid/gid (2nd field of ``Uid:``/``Gid:``) and ``Groups:``."""
    fields: dict[str, list[int]] = {}
    for line in text.splitlines():
        # startswith, not split: status has ~60 lines and this runs three times per Workload API call
        if line.startswith(_STATUS_KEYS):
            key = line.split(":", 1)[0]
            fields[key] = _ids(line, key)
    uids, gids = fields.get("Uid", []), fields.get("Gid", [])
    if len(uids) < 2 or len(gids) < 2:
        raise WorkloadAttestationError("procfs: status lacks Uid/Gid lines")
    return StatusIds(euid=uids[1], egid=gids[1], groups=tuple(fields.get("Groups", [])))


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


class LinuxProcFs:
    """The real ``/proc`` (optionally rooted elsewhere, e.g. a host mount)."""

    def __init__(self, root: str = "/proc") -> None:
        self._root = Path(root)

    def _read(self, pid: int, name: str) -> str:
        # os.read in small chunks: a buffered read(_MAX_PROC_TEXT) allocates the whole cap on every call,
        # which made up most of the per-call attestation cost (5 reads per Workload API call).
        try:
            fd = os.open(f"{self._root}/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                chunks: list[bytes] = []
                while sum(map(len, chunks)) <= _MAX_PROC_TEXT and (chunk := os.read(fd, _PROC_READ_CHUNK)):
                    chunks.append(chunk)
            finally:
                os.close(fd)
        except OSError as err:
            raise WorkloadAttestationError(f"procfs: cannot read {name} of pid {pid!r}") from err
        return b"".join(chunks)[:_MAX_PROC_TEXT].decode("utf-8", "replace")

    def status(self, pid: int) -> str:
        return self._read(pid, "status")

    def stat(self, pid: int) -> str:
        return self._read(pid, "stat")

    def cgroup(self, pid: int) -> str:
        return self._read(pid, "cgroup")

    def exe_path(self, pid: int) -> str:
        try:
            return os.readlink(self._root / str(pid) / "exe")
        except OSError as err:
            raise WorkloadAttestationError(f"procfs: cannot resolve exe of pid {pid!r}") from err

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

"""The process behind one Workload API connection, captured once at accept.

At accept the agent reads SO_PEERCRED, takes a pidfd for the peer (SO_PEERPIDFD, else
``pidfd_open`` at once) and snapshots what selectors derive from: the start time, the
effective uid and gid, the supplementary groups and the executable (device, inode, path).
A process that started after the accept has reused the peer's pid and is refused. Every call
then checks that the process is alive and still has that identity: a setgid exec, a setuid
exec or an exec of another binary on the inherited socket is refused with PERMISSION_DENIED::

    caller = capture(sock, LinuxProcFs(), accepted_at=boot_ticks())  # per connection
    caller.check()                                                   # per call, after attestation
    caller.close()                                                   # when the connection is lost
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
from dataclasses import dataclass

from spiffe_agent.attest.procfs import (
    ExeId,
    ProcessKey,
    ProcFs,
    StatusFile,
    StatusIds,
    parse_stat_start_time,
    parse_status,
)
from spiffe_agent.errors import AgentError, WorkloadAttestationError
from spiffe_py._peercred import PeerCred, peer_cred_from_socket

SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)  # Linux 6.5+
_INT = struct.Struct("i")


class CallerChangedError(WorkloadAttestationError):
    """The connected process changed its ids or executable since it connected."""


class TooManyConnectionsError(AgentError):
    """The connecting uid already holds as many Workload API connections as allowed."""


@dataclass(frozen=True, slots=True)
class Identity:
    """What selectors derive from, as read at accept; ``exe`` is None if the agent may not see it."""

    ids: StatusIds
    exe: ExeId | None


class Caller:
    """The connected process: credentials, pidfd, start time and identity snapshot, all from accept.

    Used only on the event loop's thread; :meth:`close` (connection lost) may run while a call is
    awaiting its attestors, after which :meth:`exited` answers True, so that call fails.
    """

    __slots__ = ("_fd", "_poller", "_procfs", "_status", "cred", "identity", "process")

    def __init__(self, cred: PeerCred, process: ProcessKey, identity: Identity, *, pidfd: int, status: StatusFile,
                 procfs: ProcFs) -> None:
        self.cred = cred
        self.process = process
        self.identity = identity
        self._fd = pidfd
        self._status = status
        self._procfs = procfs
        self._poller = select.poll()  # registered once: each exited() is one poll(2)
        self._poller.register(pidfd, select.POLLIN)

    @property
    def pid(self) -> int:
        """The connected process's pid."""
        return self.process.pid

    def exited(self) -> bool:
        """True once the process terminated (or the connection was closed); a pidfd polls readable then."""
        return self._fd < 0 or bool(self._poller.poll(0))

    def check(self) -> None:
        """Raise unless the process is alive and has the identity it had at accept.

        Raises:
            CallerChangedError: its uid, gid, groups or executable changed since it connected.
            WorkloadAttestationError: it exited.
        """
        pid = self.process.pid
        try:
            ids = parse_status(self._status.read())
        except OSError as err:
            raise WorkloadAttestationError(f"attest: caller pid {pid!r} has exited") from err
        if ids != self.identity.ids:
            raise CallerChangedError(f"attest: caller pid {pid!r} changed its uid, gid or groups since it connected")
        exe = self.identity.exe
        if exe is not None and self._procfs.exe_file(pid) != (exe.dev, exe.ino):
            raise CallerChangedError(f"attest: caller pid {pid!r} runs another executable than when it connected")
        # last: while the pidfd says "alive" the pid was not reused, so every read above was this process
        if self.exited():
            raise WorkloadAttestationError(f"attest: caller pid {pid!r} has exited")

    def close(self) -> None:
        """Release the pidfd and the status file (idempotent)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            self._poller.unregister(fd)
            os.close(fd)
        self._status.close()


def _exited(pidfd: int) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def peer_pidfd(sock: socket.socket, pid: int) -> int:
    """A pidfd for the socket's peer: SO_PEERPIDFD names the very process that connected; else pidfd_open."""
    try:
        fd: int = _INT.unpack(sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD, _INT.size))[0]
        return fd
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP):  # the kernel lacks it
            raise WorkloadAttestationError(f"attest: caller pid {pid!r} is gone") from err
    try:
        return os.pidfd_open(pid)
    except OSError as err:
        raise WorkloadAttestationError(f"attest: caller pid {pid!r} is gone") from err


def _exe(procfs: ProcFs, pid: int) -> ExeId | None:
    try:
        dev, ino = procfs.exe_file(pid)
        return ExeId(dev, ino, procfs.exe_path(pid))
    except WorkloadAttestationError:
        return None  # an unprivileged agent cannot see another user's exe (nor hash it for selectors)


def capture(sock: socket.socket, procfs: ProcFs, *, accepted_at: int, cred: PeerCred | None = None) -> Caller:
    """The caller behind a just-accepted connection; ``accepted_at``: boot clock ticks read at accept.

    Raises:
        SpiffeError: no usable SO_PEERCRED (PeerCredError), or as :func:`open_caller`.
    """
    cred = cred or peer_cred_from_socket(sock)
    return open_caller(cred, peer_pidfd(sock, cred.pid), procfs, accepted_at=accepted_at)


def open_caller(cred: PeerCred, pidfd: int, procfs: ProcFs, *, accepted_at: int) -> Caller:
    """The caller ``cred`` names, with ``pidfd`` for its process (the Caller owns it, or it is closed).

    Raises:
        WorkloadAttestationError: the process is gone, started after ``accepted_at`` (its pid was
            reused), or does not run as the uid it connected with.
    """
    pid = cred.pid
    status: StatusFile | None = None
    try:
        start_time = parse_stat_start_time(procfs.stat(pid))
        if start_time > accepted_at:
            raise WorkloadAttestationError(f"attest: pid {pid!r} started after it connected (pid reused)")
        status = procfs.open_status(pid)
        ids = parse_status(status.read())
        exe = _exe(procfs, pid)
        # read after the pidfd existed and the process is still alive: all of it was this process
        if _exited(pidfd):
            raise WorkloadAttestationError(f"attest: caller pid {pid!r} is gone")
        if ids.euid != cred.uid:
            raise CallerChangedError(f"attest: pid {pid!r} no longer runs as the connecting uid")
    except OSError as err:
        _release(pidfd, status)
        raise WorkloadAttestationError(f"attest: caller pid {pid!r} is gone") from err
    except BaseException:
        _release(pidfd, status)
        raise
    return Caller(cred, ProcessKey(pid, start_time), Identity(ids, exe), pidfd=pidfd, status=status, procfs=procfs)


def _release(pidfd: int, status: StatusFile | None) -> None:
    if status is not None:
        status.close()
    os.close(pidfd)


class ConnectionLimit:
    """Open Workload API connections per uid, at most ``per_uid`` each: one uid's flood cannot starve another."""

    def __init__(self, per_uid: int) -> None:
        if per_uid < 1:
            raise ValueError("connection limit: per_uid must be positive")
        self._per_uid = per_uid
        self._open: dict[int, int] = {}

    def admit(self, uid: int) -> None:
        """Count a new connection of ``uid``; TooManyConnectionsError past the limit (not counted then)."""
        count = self._open.get(uid, 0)
        if count >= self._per_uid:
            raise TooManyConnectionsError(f"too many connections for uid {uid} (max {self._per_uid})")
        self._open[uid] = count + 1

    def release(self, uid: int) -> None:
        """A connection of ``uid`` ended."""
        count = self._open.get(uid, 0) - 1
        if count > 0:
            self._open[uid] = count
        else:
            self._open.pop(uid, None)

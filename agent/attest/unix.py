"""The ``unix`` workload attestor.

Selectors come from the caller's EFFECTIVE ids in ``/proc/<pid>/status`` (not
SO_PEERCRED, which is frozen at connect time)::

    attestor = UnixAttestor(LinuxProcFs(), SystemUserDb(), discover_workload_path=True)
    selectors = await attestor.attest(pid)   # unix:uid:1000, unix:user:alice, unix:path:/usr/bin/app, ...
"""

from __future__ import annotations

import asyncio
import grp
import pwd
from typing import Protocol

from agent.attest.procfs import ProcFs, parse_status
from spiffe_py.selectors import Selector

NAME = "unix"


class UserDb(Protocol):
    """Name lookups for uids and gids; ``None`` when unknown."""

    def user_name(self, uid: int) -> str | None:
        """Login name of ``uid``."""
        ...

    def group_name(self, gid: int) -> str | None:
        """Group name of ``gid``."""
        ...


class SystemUserDb:
    """The host's passwd/group databases."""

    def user_name(self, uid: int) -> str | None:
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return None

    def group_name(self, gid: int) -> str | None:
        try:
            return grp.getgrgid(gid).gr_name
        except KeyError:
            return None


def _sel(value: str) -> Selector:
    return Selector(NAME, value)


def unix_id_selectors(status_text: str, users: UserDb) -> frozenset[Selector]:
    """uid/user/gid/group/supplementary_gid/supplementary_group selectors from status text (pure)."""
    ids = parse_status(status_text)
    out = {_sel(f"uid:{ids.euid}"), _sel(f"gid:{ids.egid}")}
    if (user := users.user_name(ids.euid)) is not None:
        out.add(_sel(f"user:{user}"))
    if (group := users.group_name(ids.egid)) is not None:
        out.add(_sel(f"group:{group}"))
    for gid in ids.groups:
        out.add(_sel(f"supplementary_gid:{gid}"))
        if (name := users.group_name(gid)) is not None:
            out.add(_sel(f"supplementary_group:{name}"))
    return frozenset(out)


class UnixAttestor:
    """Workload attestor producing ``unix:*`` selectors."""

    name = NAME

    def __init__(
        self,
        procfs: ProcFs,
        users: UserDb,
        *,
        discover_workload_path: bool = False,
        workload_size_limit: int = 0,
    ) -> None:
        # workload_size_limit: >0 caps hashing, 0 = unlimited, <0 = never hash (SPIRE semantics)
        self._procfs = procfs
        self._users = users
        self._discover = discover_workload_path
        self._size_limit = workload_size_limit

    def _attest_sync(self, pid: int) -> frozenset[Selector]:
        selectors = set(unix_id_selectors(self._procfs.status(pid), self._users))
        if self._discover:
            selectors.add(_sel(f"path:{self._procfs.exe_path(pid)}"))
            if self._size_limit >= 0:
                selectors.add(_sel(f"sha256:{self._procfs.exe_sha256(pid, self._size_limit)}"))
        return frozenset(selectors)

    async def attest(self, pid: int) -> frozenset[Selector]:
        """Selectors for ``pid``; raises WorkloadAttestationError when /proc cannot be read."""
        if not self._discover:
            # one small /proc read and name lookups: a thread hop would cost more than the work
            return self._attest_sync(pid)
        # hashing a large binary blocks; keep the event loop free
        return await asyncio.to_thread(self._attest_sync, pid)

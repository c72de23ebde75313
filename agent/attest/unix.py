"""The ``unix`` workload attestor.

Selectors come from the caller's identity snapshot taken at accept: its EFFECTIVE ids from
``/proc/<pid>/status`` and its executable (the caller is refused if either changed since)::

    attestor = UnixAttestor(LinuxProcFs(), CachedUserDb(SystemUserDb()), discover_workload_path=True)
    selectors = await attestor.attest(caller)   # unix:uid:1000, unix:user:alice, unix:path:/usr/bin/app, ...

Name lookups are cached for :data:`NAME_CACHE_TTL` seconds: a renamed user or
group shows its new name in selectors at most that long after the change.
"""

from __future__ import annotations

import asyncio
import grp
import pwd
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from spiffe_agent.attest.caller import Caller
from spiffe_agent.attest.procfs import ProcFs, StatusIds
from spiffe_agent.errors import AgentConfigError, WorkloadAttestationError
from spiffe_py.selectors import Selector

NAME = "unix"
NAME_CACHE_TTL = 30.0
NAME_CACHE_SIZE = 4096


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


class CachedUserDb:
    """A :class:`UserDb` remembering answers (unknown ids too) for ``ttl`` seconds.

    getpwuid/getgrgid go through NSS on every call (files, maybe LDAP); one Workload API
    call asks for the user, the group and every supplementary group.
    """

    def __init__(self, inner: UserDb, *, ttl: float = NAME_CACHE_TTL,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._inner = inner
        self._ttl = ttl
        self._monotonic = monotonic
        self._users: dict[int, tuple[float, str | None]] = {}
        self._groups: dict[int, tuple[float, str | None]] = {}

    def _lookup(self, cache: dict[int, tuple[float, str | None]], key: int,
                fetch: Callable[[int], str | None]) -> str | None:
        now = self._monotonic()
        hit = cache.get(key)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        if len(cache) >= NAME_CACHE_SIZE:
            cache.clear()  # bounded: ids come from callers' processes; a full reset is rare and cheap
        name = fetch(key)
        cache[key] = (now, name)
        return name

    def user_name(self, uid: int) -> str | None:
        """Login name of ``uid`` (cached)."""
        return self._lookup(self._users, uid, self._inner.user_name)

    def group_name(self, gid: int) -> str | None:
        """Group name of ``gid`` (cached)."""
        return self._lookup(self._groups, gid, self._inner.group_name)


def _sel(value: str) -> Selector:
    return Selector(NAME, value)


def unix_id_selectors(ids: StatusIds, users: UserDb) -> frozenset[Selector]:
    """uid/user/gid/group/supplementary_gid/supplementary_group selectors from parsed status ids (pure)."""
    return _id_selectors(ids, _names(ids, users))


_Names = tuple[str | None, str | None, tuple[str | None, ...]]  # user, group, supplementary group names


def _names(ids: StatusIds, users: UserDb) -> _Names:
    return users.user_name(ids.euid), users.group_name(ids.egid), tuple(users.group_name(g) for g in ids.groups)


def _id_selectors(ids: StatusIds, names: _Names) -> frozenset[Selector]:
    user, group, group_names = names
    out = {_sel(f"uid:{ids.euid}"), _sel(f"gid:{ids.egid}")}
    if user is not None:
        out.add(_sel(f"user:{user}"))
    if group is not None:
        out.add(_sel(f"group:{group}"))
    for gid, name in zip(ids.groups, group_names, strict=True):
        out.add(_sel(f"supplementary_gid:{gid}"))
        if name is not None:
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
        # ids -> (names looked up then, selectors): a caller whose ids and names are unchanged gets the
        # same frozenset back (no Selector validation per call, and its hash is computed only once)
        self._memo: dict[StatusIds, tuple[_Names, frozenset[Selector]]] = {}

    def id_selectors(self, ids: StatusIds) -> frozenset[Selector]:
        """:func:`unix_id_selectors` for ``ids``, names looked up now; the same object while nothing changed."""
        names = _names(ids, self._users)
        hit = self._memo.get(ids)
        if hit is not None and hit[0] == names:
            return hit[1]
        if len(self._memo) >= NAME_CACHE_SIZE:
            self._memo.clear()  # bounded like the name cache
        selectors = _id_selectors(ids, names)
        self._memo[ids] = (names, selectors)
        return selectors

    def _attest_sync(self, caller: Caller) -> frozenset[Selector]:
        ids = caller.identity.ids
        if not self._discover:
            return self.id_selectors(ids)
        exe = caller.identity.exe
        if exe is None:
            raise WorkloadAttestationError(f"unix: cannot resolve exe of pid {caller.pid!r}")
        selectors = set(self.id_selectors(ids))
        selectors.add(_sel(f"path:{exe.path}"))
        if self._size_limit >= 0:
            # through /proc/<pid>/exe; the check after attestation proves it was still that file
            selectors.add(_sel(f"sha256:{self._procfs.exe_sha256(caller.pid, self._size_limit)}"))
        return frozenset(selectors)

    async def attest(self, caller: Caller) -> frozenset[Selector]:
        """Selectors for ``caller``'s snapshot; WorkloadAttestationError if its exe cannot be read."""
        if not self._discover:
            # cached name lookups only: a thread hop would cost more
            return self._attest_sync(caller)
        # hashing a large binary blocks; keep the event loop free
        return await asyncio.to_thread(self._attest_sync, caller)


CONFIG_KEYS = frozenset({"discover_workload_path", "workload_size_limit"})


def from_config(table: Mapping[str, Any], procfs: ProcFs) -> UnixAttestor:
    """The unix attestor from its config table (``discover_workload_path``, ``workload_size_limit``)."""
    unknown = sorted(set(table) - CONFIG_KEYS)
    if unknown:
        raise AgentConfigError(f"config: unknown keys for the unix attestor: {unknown!r}")
    discover = table.get("discover_workload_path", False)
    limit = table.get("workload_size_limit", 0)
    if not isinstance(discover, bool) or not isinstance(limit, int) or isinstance(limit, bool):
        raise AgentConfigError("config: unix attestor: discover_workload_path is a bool, workload_size_limit an int")
    return UnixAttestor(procfs, CachedUserDb(SystemUserDb()), discover_workload_path=discover,
                        workload_size_limit=limit)

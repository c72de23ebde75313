"""The ``docker`` workload attestor.

The container ID comes only from ``/proc/<pid>/cgroup`` (kernel-controlled;
never mountinfo, which a workload can forge with bind mounts), and only from a
path that is exactly one of the runtimes' cgroup layouts. Every line naming an
ID must agree. The engine then says which process is the container's init, and
the caller must share its namespaces::

    cid = container_id_from_cgroup(procfs.cgroup(pid))        # pure; None = not in a container
    info = DockerEngineApi.from_env().inspect(cid)            # Docker Engine API over its unix socket
    verify_in_container(pid, cid, namespaces_of(procfs, pid), container_namespaces(procfs, cid, info))
    container_selectors(info)  # docker:label:K:V, docker:image_id:..., docker:image_config_digest:..., docker:env:K=V
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlparse

from spiffe_agent.attest.caller import Caller
from spiffe_agent.attest.procfs import ProcFs
from spiffe_agent.errors import ContainerIdError, WorkloadAttestationError
from spiffe_py.errors import InvalidSelectorError
from spiffe_py.selectors import Selector

NAME = "docker"
DEFAULT_SOCKET = "/var/run/docker.sock"
MAX_RESPONSE_BYTES = 4 << 20
DEFAULT_TIMEOUT = 5.0
INSPECT_CACHE_TTL = 5.0  # seconds a container's selectors are reused
INSPECT_CACHE_SIZE = 1024  # containers remembered at most (least recently stored evicted)

_HEX = r"[0-9a-f]{64}"
_FULL_ID_RE = re.compile(_HEX)
_POD_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}"
_QOS = r"(?:besteffort|burstable)"

# The cgroup layouts container runtimes create, as (parent segments, leaf) regexes; the leaf
# captures the ID. Only these name a container: the parents are created by root (the runtime or
# systemd), so a user's delegated cgroup named after a container ID names nothing.
# ``libpod-conmon-<id>.scope`` (podman's monitor, a host process) does not match ``libpod-<id>``.
_LAYOUTS: tuple[tuple[tuple[str, ...], str], ...] = (
    # docker, cgroupfs driver (v1 and v2)
    (("docker",), rf"(?P<id>{_HEX})"),
    # docker, systemd driver
    (("system\\.slice",), rf"docker-(?P<id>{_HEX})\.scope"),
    # kubernetes, cgroupfs driver: containerd and dockershim name the container by bare ID, CRI-O "crio-<id>"
    (("kubepods", _QOS, f"pod{_POD_UID}"), rf"(?:crio-)?(?P<id>{_HEX})"),
    (("kubepods", f"pod{_POD_UID}"), rf"(?:crio-)?(?P<id>{_HEX})"),  # guaranteed QoS
    # kubernetes, systemd driver (containerd/CRI, CRI-O, cri-dockerd)
    (
        ("kubepods\\.slice", f"kubepods-{_QOS}\\.slice", f"kubepods-{_QOS}-pod{_POD_UID}\\.slice"),
        rf"(?:cri-containerd|crio|docker)-(?P<id>{_HEX})\.scope",
    ),
    (
        ("kubepods\\.slice", f"kubepods-pod{_POD_UID}\\.slice"),
        rf"(?:cri-containerd|crio|docker)-(?P<id>{_HEX})\.scope",
    ),
    # podman rootful (systemd, cgroupfs); on cgroup v2 the payload runs in a "container" child
    (("machine\\.slice",), rf"libpod-(?P<id>{_HEX})\.scope(?:/container)?"),
    (("libpod_parent",), rf"libpod-(?P<id>{_HEX})(?:/container)?"),
    # podman rootless: the user's own systemd instance
    (
        ("user\\.slice", "user-[0-9]+\\.slice", "user@[0-9]+\\.service", "(?:user|app)\\.slice"),
        rf"libpod-(?P<id>{_HEX})\.scope(?:/container)?",
    ),
)


def _tail(parents: tuple[str, ...], leaf: str) -> str:
    """Regex of the leaf under any trailing run of its parents: ``(?:(?:a/)?b/)?leaf``."""
    out = ""
    for segment in parents:
        out = f"(?:{out}{segment}/)?"
    return out + leaf


def _numbered(i: int, pattern: str) -> str:
    # one combined regex needs a distinct name per alternative's ID group
    return pattern.replace("(?P<id>", f"(?P<id{i}>")


# From the reader's cgroup namespace root: the whole layout. When the agent itself runs in a
# private cgroup namespace, other containers' paths climb out of it ("/../<id>") and show only
# the layout's tail below the common ancestor.
_ABSOLUTE_RE = re.compile("|".join(_numbered(i, "/" + "/".join((*p, leaf))) for i, (p, leaf) in enumerate(_LAYOUTS)))
_RELATIVE_RE = re.compile(
    "(?:/\\.\\.)+/(?:" + "|".join(_numbered(i, _tail(p, leaf)) for i, (p, leaf) in enumerate(_LAYOUTS)) + ")"
)


def container_id_from_path(path: str) -> str | None:
    """Container ID of one cgroup path when it is exactly a known runtime layout, else None (pure)."""
    m = _ABSOLUTE_RE.fullmatch(path) or _RELATIVE_RE.fullmatch(path)
    if m is None or m.lastindex is None:
        return None
    return m[m.lastindex]  # each alternative's only group is its ID


def container_id_from_cgroup(text: str) -> str | None:
    """Container ID named by ``/proc/<pid>/cgroup`` text, or None when no line is a container's cgroup.

    Lines whose path is not a known runtime layout are ignored (the host's own cgroups, or one
    a user created and named after a container ID). The ID says where the process's cgroup is,
    not that the process is in that container: :func:`verify_in_container` checks that.

    Raises:
        ContainerIdError: a line is malformed, or lines name different container IDs.
    """
    paths: set[str] = set()  # cgroup v1 repeats one path per hierarchy: match each once
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split(":", 2)  # hierarchy-ID:controllers:path (v2: "0::path")
        if len(parts) != 3:
            raise ContainerIdError(f"docker: malformed cgroup line: {line[:120]!r}")
        paths.add(parts[2])
    ids = {cid for path in paths if (cid := container_id_from_path(path)) is not None}
    if len(ids) > 1:
        raise ContainerIdError(f"docker: multiple container IDs found in cgroups: {sorted(ids)!r}")
    return ids.pop() if ids else None


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """The parts of a container inspect result that become selectors."""

    labels: Mapping[str, str]
    env: tuple[str, ...]
    image: str  # Config.Image as started, e.g. "local/busybox:1"
    image_id: str  # "sha256:..." image config digest
    pid: int = 0  # State.Pid: host PID of the container's init, 0 when it is not running


def parse_inspect(body: bytes) -> ContainerInfo:
    """Parse a ``GET /containers/<id>/json`` body (pure)."""
    try:
        doc = json.loads(body)
        config: dict[str, Any] = doc.get("Config") or {}
        labels = config.get("Labels") or {}
        env = config.get("Env") or []
        pid = (doc.get("State") or {}).get("Pid") or 0
        if not isinstance(pid, int) or isinstance(pid, bool) or pid < 0:
            raise TypeError(f"State.Pid is not a PID: {pid!r}")
        info = ContainerInfo(
            labels={str(k): str(v) for k, v in labels.items()},
            env=tuple(str(e) for e in env),
            image=str(config.get("Image") or ""),
            image_id=str(doc.get("Image") or ""),
            pid=pid,
        )
    except (ValueError, AttributeError, TypeError) as err:
        raise WorkloadAttestationError("docker: malformed container inspect response") from err
    return info


def container_selectors(info: ContainerInfo) -> frozenset[Selector]:
    """Selectors for an inspected container (pure); values that cannot be selectors are skipped."""
    values = [f"label:{k}:{v}" for k, v in info.labels.items()]
    values += [f"env:{e}" for e in info.env if "=" in e]
    if info.image:
        values.append(f"image_id:{info.image}")
    if info.image_id:
        values.append(f"image_config_digest:{info.image_id}")
    out: set[Selector] = set()
    for value in values:
        # container metadata is workload-controlled: a non-printable or huge value just yields no selector
        with contextlib.suppress(InvalidSelectorError):
            out.add(Selector(NAME, value))
    return frozenset(out)


# A process is inside a container when it shares the namespaces of the container's init. The
# mount namespace is the container's own even with --pid=host (every container gets one); the pid
# namespace also holds a process that joined the mounts but not the container.
NAMESPACES = ("mnt", "pid")


def namespaces_of(procfs: ProcFs, pid: int) -> tuple[str, ...]:
    """The identities of ``pid``'s :data:`NAMESPACES` (raises WorkloadAttestationError when unreadable)."""
    return tuple(procfs.namespace(pid, kind) for kind in NAMESPACES)


def container_namespaces(procfs: ProcFs, container_id: str, info: ContainerInfo) -> tuple[str, ...]:
    """The namespaces of the container's init process, as the engine names it."""
    if info.pid <= 0:
        raise WorkloadAttestationError(f"docker: container {container_id[:12]} is not running")
    return namespaces_of(procfs, info.pid)


def verify_in_container(pid: int, container_id: str, caller: tuple[str, ...], container: tuple[str, ...]) -> None:
    """Refuse a caller whose cgroup names the container but who does not share its namespaces (pure).

    A cgroup path is only a name: a process can sit in a cgroup called like a container (a
    delegated subtree, another hierarchy, or moved there by root) without being in it.
    """
    if caller != container:
        raise WorkloadAttestationError(
            f"docker: pid {pid!r} is in the cgroup of container {container_id[:12]} but not in its namespaces"
        )


class DockerApi(Protocol):
    """The one Docker Engine call the attestor needs."""

    def inspect(self, container_id: str) -> ContainerInfo:
        """Inspect a container by full ID."""
        ...


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def socket_path_from_docker_host(value: str | None) -> str:
    """Socket path from a ``DOCKER_HOST`` value (only ``unix://`` is supported)."""
    if not value:
        return DEFAULT_SOCKET
    url = urlparse(value)
    if url.scheme != "unix" or not url.path:
        raise ValueError(f"docker: only unix:// DOCKER_HOST is supported: {value!r}")
    return url.path


class DockerEngineApi:
    """Docker Engine API client over its unix socket (stdlib only, bounded, with timeouts)."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._socket_path = socket_path
        self._timeout = timeout

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DockerEngineApi:
        """Client for ``DOCKER_HOST`` (unix://) or the default socket."""
        return cls(socket_path_from_docker_host((os.environ if env is None else env).get("DOCKER_HOST")))

    def inspect(self, container_id: str) -> ContainerInfo:
        if not _FULL_ID_RE.fullmatch(container_id):
            raise ValueError(f"docker: not a full container id: {container_id!r}")
        conn = _UnixHTTPConnection(self._socket_path, self._timeout)
        try:
            conn.request("GET", f"/containers/{container_id}/json")
            resp = conn.getresponse()
            body = resp.read(MAX_RESPONSE_BYTES + 1)
        except OSError as err:
            raise WorkloadAttestationError(f"docker: engine API unreachable at {self._socket_path!r}") from err
        finally:
            conn.close()
        if len(body) > MAX_RESPONSE_BYTES:
            raise WorkloadAttestationError("docker: inspect response too large")
        if resp.status != 200:
            raise WorkloadAttestationError(f"docker: inspect of {container_id!r} returned HTTP {resp.status}")
        return parse_inspect(body)


@dataclass(frozen=True, slots=True)
class _Inspected:
    """A cached inspect result: the container's selectors and its init process's namespaces."""

    at: float
    selectors: frozenset[Selector]
    init_pid: int
    namespaces: tuple[str, ...]


class DockerAttestor:
    """Workload attestor producing ``docker:*`` selectors (none when not in a container).

    Selectors are cached per container ID for ``cache_ttl`` seconds, with the namespaces of the
    container's init: the ID comes from the kernel (cgroup), is random and never reused, and a
    container's labels, env and image cannot change after creation, so a hit describes the same
    container; it saves an engine round trip per call. Every call still checks that the caller
    shares the container's namespaces (two ``/proc/<pid>/ns`` reads). A caller that does not is
    refused; the engine is asked again first only if the cached init has left those namespaces
    (the container restarted), so refused callers cannot make the agent call the engine.
    """

    name = NAME

    def __init__(
        self,
        procfs: ProcFs,
        api: DockerApi,
        *,
        cache_ttl: float = INSPECT_CACHE_TTL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._procfs = procfs
        self._api = api
        self._ttl = cache_ttl
        self._monotonic = monotonic
        self._cache: OrderedDict[str, _Inspected] = OrderedDict()  # by container ID

    def _store(self, cid: str, hit: _Inspected) -> None:
        self._cache[cid] = hit
        self._cache.move_to_end(cid)
        while len(self._cache) > INSPECT_CACHE_SIZE:
            self._cache.popitem(last=False)

    def _restarted(self, hit: _Inspected) -> bool:
        """Whether the cached init is gone or in other namespaces now (the container restarted)."""
        try:
            return namespaces_of(self._procfs, hit.init_pid) != hit.namespaces
        except WorkloadAttestationError:
            return True

    async def _verified_selectors(self, pid: int, cid: str) -> frozenset[Selector]:
        """Selectors of container ``cid`` once ``pid`` is shown to be inside it."""
        caller = namespaces_of(self._procfs, pid)
        now = self._monotonic()
        hit = self._cache.get(cid)
        if hit is None or now - hit.at >= self._ttl or (hit.namespaces != caller and self._restarted(hit)):
            info = await asyncio.to_thread(self._api.inspect, cid)
            hit = _Inspected(now, container_selectors(info), info.pid, container_namespaces(self._procfs, cid, info))
            self._store(cid, hit)
        verify_in_container(pid, cid, caller, hit.namespaces)
        return hit.selectors

    async def attest(self, caller: Caller) -> frozenset[Selector]:
        """Selectors for the caller's container (from its cgroup)."""
        pid = caller.pid
        cid = container_id_from_cgroup(self._procfs.cgroup(pid))  # one small /proc read: inline
        if cid is None:
            return frozenset()
        return await self._verified_selectors(pid, cid)

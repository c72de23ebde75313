"""The ``docker`` workload attestor.

The container ID comes only from ``/proc/<pid>/cgroup`` (kernel-controlled;
never mountinfo, which a workload can forge with bind mounts). Every cgroup line
naming an ID must agree::

    cid = container_id_from_cgroup(procfs.cgroup(pid))        # pure; None = not in a container
    info = DockerEngineApi.from_env().inspect(cid)            # Docker Engine API over its unix socket
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

from agent.attest.caller import Caller
from agent.attest.procfs import ProcFs
from agent.errors import ContainerIdError, WorkloadAttestationError
from spiffe_py.errors import InvalidSelectorError
from spiffe_py.selectors import Selector

NAME = "docker"
DEFAULT_SOCKET = "/var/run/docker.sock"
MAX_RESPONSE_BYTES = 4 << 20
DEFAULT_TIMEOUT = 5.0
INSPECT_CACHE_TTL = 5.0  # seconds a container's selectors are reused
INSPECT_CACHE_SIZE = 1024  # containers remembered at most (least recently stored evicted)

_ID_RE = re.compile(r"\b([0-9a-f]{64})\b")
_FULL_ID_RE = re.compile(r"[0-9a-f]{64}")
_POD_RE = re.compile(r"pod[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}")


def _line_container(path: str) -> tuple[str, bool] | None:
    """(container id, whether a pod UID sits left of it) for one cgroup path, walking right to left."""
    segments = path.split("/")
    for i in range(len(segments) - 1, -1, -1):
        if m := _ID_RE.search(segments[i]):
            has_pod = any(_POD_RE.search(s) for s in segments[:i])
            return m.group(1), has_pod
    return None


def container_id_from_cgroup(text: str) -> str | None:
    """Container ID named by ``/proc/<pid>/cgroup`` text, or None when there is none.

    Raises:
        ContainerIdError: lines name different container IDs.
    """
    found: list[tuple[str, bool]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split(":", 2)  # hierarchy-ID:controllers:path (v2: "0::path")
        if len(parts) != 3:
            raise ContainerIdError(f"docker: malformed cgroup line: {line[:120]!r}")
        if hit := _line_container(parts[2]):
            found.append(hit)
    # kind-on-docker: lines under a pod name the workload, the others the node container
    if any(pod for _, pod in found):
        found = [hit for hit in found if hit[1]]
    ids = {cid for cid, _ in found}
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


def parse_inspect(body: bytes) -> ContainerInfo:
    """Parse a ``GET /containers/<id>/json`` body (pure)."""
    try:
        doc = json.loads(body)
        config: dict[str, Any] = doc.get("Config") or {}
        labels = config.get("Labels") or {}
        env = config.get("Env") or []
        info = ContainerInfo(
            labels={str(k): str(v) for k, v in labels.items()},
            env=tuple(str(e) for e in env),
            image=str(config.get("Image") or ""),
            image_id=str(doc.get("Image") or ""),
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


class DockerAttestor:
    """Workload attestor producing ``docker:*`` selectors (none when not in a container).

    Selectors are cached per container ID for ``cache_ttl`` seconds: the ID comes from the kernel
    (cgroup), is random and never reused, and a container's labels, env and image cannot change
    after creation, so a hit describes the same container; it saves an engine round trip per call.
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
        self._cache: OrderedDict[str, tuple[float, frozenset[Selector]]] = OrderedDict()  # cid -> (at, selectors)

    def _cached(self, cid: str, now: float) -> frozenset[Selector] | None:
        hit = self._cache.get(cid)
        if hit is None or now - hit[0] >= self._ttl:
            return None
        return hit[1]

    def _store(self, cid: str, now: float, selectors: frozenset[Selector]) -> None:
        self._cache[cid] = (now, selectors)
        self._cache.move_to_end(cid)
        while len(self._cache) > INSPECT_CACHE_SIZE:
            self._cache.popitem(last=False)

    async def attest(self, caller: Caller) -> frozenset[Selector]:
        """Selectors for the caller's container (from its cgroup)."""
        pid = caller.pid
        cid = container_id_from_cgroup(self._procfs.cgroup(pid))  # one small /proc read: inline
        if cid is None:
            return frozenset()
        now = self._monotonic()
        cached = self._cached(cid, now)
        if cached is not None:
            return cached
        selectors = container_selectors(await asyncio.to_thread(self._api.inspect, cid))
        self._store(cid, now, selectors)
        return selectors

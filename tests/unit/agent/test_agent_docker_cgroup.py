"""container_id_from_cgroup against realistic /proc/<pid>/cgroup fixtures, and docker selectors."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiffe_agent.attest.docker import (
    ContainerInfo,
    DockerAttestor,
    container_id_from_cgroup,
    container_id_from_path,
    container_selectors,
    parse_inspect,
    socket_path_from_docker_host,
)
from spiffe_agent.errors import ContainerIdError, WorkloadAttestationError
from spiffe_py.selectors import Selector
from tests.support.callers import pid_caller

CID = "9f8e5c3a1b2d4e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7"
OTHER = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
POD = "2c48913c-b29f-11e7-9350-020968147796"
POD_US = POD.replace("-", "_")

# what the kernel shows a host-namespace reader for a process of each runtime
CASES = {
    "docker-cgroupfs-v1-hybrid": (  # this project's CI box: every v1 hierarchy and the unified one
        f"9:name=systemd:/docker/{CID}\n8:pids:/docker/{CID}\n4:memory:/docker/{CID}\n"
        f"1:cpu:/docker/{CID}\n0::/docker/{CID}\n"
    ),
    "docker-cgroup-v1-partial": (
        f"12:memory:/docker/{CID}\n11:cpu,cpuacct:/docker/{CID}\n1:name=systemd:/docker/{CID}\n"
        "0::/system.slice/containerd.service\n"
    ),
    "docker-cgroupfs-v2": f"0::/docker/{CID}\n",
    "docker-cgroup-v2-systemd": f"0::/system.slice/docker-{CID}.scope\n",
    "docker-cgroup-v1-systemd": (
        f"5:pids:/system.slice/docker-{CID}.scope\n1:name=systemd:/system.slice/docker-{CID}.scope\n"
    ),
    "containerd-cri-v2": (
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_US}.slice/cri-containerd-{CID}.scope\n"
    ),
    "containerd-cri-v2-guaranteed": f"0::/kubepods.slice/kubepods-pod{POD_US}.slice/cri-containerd-{CID}.scope\n",
    "crio-v2": f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_US}.slice/crio-{CID}.scope\n",
    "crio-v1-cgroupfs": f"11:blkio:/kubepods/burstable/pod{POD}/crio-{CID}\n",
    "cri-dockerd-v2": (
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_US}.slice/docker-{CID}.scope\n"
    ),
    "podman-rootful": f"0::/machine.slice/libpod-{CID}.scope/container\n",
    "podman-rootful-v1": f"3:memory:/machine.slice/libpod-{CID}.scope\n",
    "podman-cgroupfs": f"0::/libpod_parent/libpod-{CID}\n",
    "podman-rootless": (
        f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope/container\n"
    ),
    "kubepods-v1": f"11:blkio:/kubepods/burstable/pod{POD}/{CID}\n10:memory:/kubepods/burstable/pod{POD}/{CID}\n",
    "kubepods-v1-guaranteed": f"10:memory:/kubepods/pod{POD}/{CID}\n",
    # the agent in a private cgroup namespace sees other containers relative to its own root
    "private-cgroupns-v2": f"0::/../{CID}\n",
    "private-cgroupns-v2-systemd": f"0::/../docker-{CID}.scope\n",
    "private-cgroupns-kubepods": (
        f"0::/../../../kubepods-burstable.slice/kubepods-burstable-pod{POD_US}.slice/cri-containerd-{CID}.scope\n"
    ),
}

# cgroups that are not a runtime's container cgroup, however much they look like one: anyone
# with a delegated subtree (systemd user instance, a chowned cgroup dir) can create these names
NOT_CONTAINERS = {
    "delegated-user-subtree": f"0::/user.slice/user-1000.slice/user@1000.service/app.slice/docker/{CID}\n",
    "chowned-dir-v1": f"8:pids:/spoof/docker/{CID}\n0::/\n",
    "bare-id-at-root": f"0::/{CID}\n",
    "id-under-other-parent": f"0::/docker/x/{CID}\n",
    "below-the-container": f"0::/docker/{CID}/sub\n",
    "scope-under-a-service": f"0::/system.slice/foo.service/docker-{CID}.scope\n",
    "scope-in-user-slice": f"0::/user.slice/docker-{CID}.scope\n",
    "scope-suffix": f"0::/system.slice/docker-{CID}.scope.d\n",
    "podman-conmon": f"0::/machine.slice/libpod-conmon-{CID}.scope\n",
    "crio-conmon": f"0::/kubepods.slice/kubepods-pod{POD_US}.slice/crio-conmon-{CID}.scope\n",
    "kubepods-below-container": f"10:memory:/kubepods/pod{POD}/{CID}/x\n",
    "relative-then-spoof": f"0::/../spoof/docker/x/{CID}\n",
    "uppercase": f"0::/docker/{CID.upper()}\n",
    "short-id": f"0::/docker/{CID[:-1]}\n",
    "long-id": f"0::/docker/{CID}0\n",
    "user-session": "0::/user.slice/user-0.slice/session-1.scope\n",
    "root-v1": "12:memory:/\n1:name=systemd:/init.scope\n",
    "empty": "",
    "short-scope-id": "0::/system.slice/docker-abc.scope\n",
}


@pytest.mark.parametrize("fixture", sorted(CASES))
def test_container_id_from_cgroup_finds_id(fixture: str) -> None:
    assert container_id_from_cgroup(CASES[fixture]) == CID


@pytest.mark.parametrize("fixture", sorted(NOT_CONTAINERS))
def test_container_id_from_cgroup_none_outside_runtime_layouts(fixture: str) -> None:
    """A 64-hex segment outside the runtimes' layouts names no container (a user can create it)."""
    assert container_id_from_cgroup(NOT_CONTAINERS[fixture]) is None


def test_spoofed_line_beside_host_lines_names_nothing() -> None:
    """The rightmost 64-hex segment used to win: a delegated cgroup named after a container."""
    text = f"9:name=systemd:/\n8:pids:/hxspoof/docker/{CID}\n4:memory:/process_api/{OTHER[:32]}\n0::/\n"
    assert container_id_from_cgroup(text) is None


def test_nested_container_names_only_the_outer_container() -> None:
    """kind-on-docker: the engine knows the node container; the pod's own path is not a docker layout.

    The attestor then refuses the nested process: it is not in the node container's namespaces.
    """
    text = f"12:memory:/docker/{OTHER}/kubepods/besteffort/pod{POD}/{CID}\n1:name=systemd:/docker/{OTHER}\n"
    assert container_id_from_cgroup(text) == OTHER


def test_container_id_from_cgroup_rejects_disagreeing_lines() -> None:
    text = f"12:memory:/docker/{CID}\n11:cpu:/docker/{OTHER}\n"
    with pytest.raises(ContainerIdError, match="multiple container IDs found"):
        container_id_from_cgroup(text)


def test_container_id_from_cgroup_rejects_malformed_line() -> None:
    with pytest.raises(ContainerIdError, match="malformed cgroup line"):
        container_id_from_cgroup(f"/docker/{CID}\n")


_SEGMENT = st.text(alphabet="abcdef0123456789-_.@", min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))
_LAYOUT_PATHS = sorted({line.split(":", 2)[2] for text in CASES.values() for line in text.splitlines() if CID in line})
_ABSOLUTE_LAYOUT_PATHS = [p for p in _LAYOUT_PATHS if not p.startswith("/..")]
_CONTROLLERS = st.sampled_from(["pids", "memory", "name=systemd"])
_HOST_LINE = st.tuples(st.integers(1, 13), _CONTROLLERS, st.lists(_SEGMENT, max_size=4))


@settings(max_examples=300)
@given(st.text(max_size=400))
def test_garbage_cgroup_text_is_none_an_id_or_container_id_error(text: str) -> None:
    try:
        cid = container_id_from_cgroup(text)
    except ContainerIdError:
        return
    assert cid is None or (len(cid) == 64 and set(cid) <= set("0123456789abcdef"))


@settings(max_examples=300)
@given(st.sampled_from(_ABSOLUTE_LAYOUT_PATHS), st.lists(_SEGMENT, min_size=1, max_size=4))
def test_layout_below_any_other_cgroup_is_not_a_container(path: str, prefix: list[str]) -> None:
    """A runtime layout placed under any other parent (where a user could create it) names nothing."""
    assert container_id_from_path("/" + "/".join(prefix) + path) is None


@settings(max_examples=300)
@given(st.sampled_from(_LAYOUT_PATHS), st.lists(_HOST_LINE))
def test_one_layout_line_among_host_lines_names_the_container(
    path: str, others: list[tuple[int, str, list[str]]]
) -> None:
    lines = [f"{n}:{ctrl}:/{'/'.join(segs)}" for n, ctrl, segs in others] + [f"0::{path}"]
    assert container_id_from_cgroup("\n".join(lines)) == CID


INSPECT = b"""{"Id": "%s", "Image": "sha256:aaaa",
 "Config": {"Image": "local/busybox:1", "Labels": {"app": "web", "tier": "a:b"},
            "Env": ["PATH=/bin", "MODE=prod", "NOEQUALS"]}}""" % CID.encode()


def test_container_selectors_from_inspect() -> None:
    sels = container_selectors(parse_inspect(INSPECT))
    assert {str(s) for s in sels} == {
        "docker:label:app:web",
        "docker:label:tier:a:b",
        "docker:env:PATH=/bin",
        "docker:env:MODE=prod",
        "docker:image_id:local/busybox:1",
        "docker:image_config_digest:sha256:aaaa",
    }


def test_container_selectors_skip_unprintable_values() -> None:
    info = ContainerInfo(labels={"bad": "a\nb", "ok": "1"}, env=(), image="", image_id="")
    assert container_selectors(info) == frozenset({Selector("docker", "label:ok:1")})


def test_parse_inspect_rejects_garbage() -> None:
    with pytest.raises(WorkloadAttestationError, match="malformed container inspect"):
        parse_inspect(b"[1, 2")


def test_docker_host_unix_only() -> None:
    assert socket_path_from_docker_host(None) == "/var/run/docker.sock"
    assert socket_path_from_docker_host("unix:///run/user/1000/docker.sock") == "/run/user/1000/docker.sock"
    with pytest.raises(ValueError, match="only unix://"):
        socket_path_from_docker_host("tcp://127.0.0.1:2375")


def test_parse_inspect_reads_the_init_pid() -> None:
    assert parse_inspect(b'{"State": {"Pid": 4242}, "Config": {}}').pid == 4242
    assert parse_inspect(b'{"State": {"Pid": 0}}').pid == 0
    assert parse_inspect(b"{}").pid == 0


@pytest.mark.parametrize("pid", ['"12"', "-1", "true", "1.5"])
def test_parse_inspect_rejects_a_bad_pid(pid: str) -> None:
    with pytest.raises(WorkloadAttestationError, match="malformed container inspect"):
        parse_inspect(b'{"State": {"Pid": %s}}' % pid.encode())


HOST_NS = ("mnt:[4026531832]", "pid:[4026531836]")
CONTAINER_NS = ("mnt:[4026532174]", "pid:[4026532177]")
INIT_PID = 500


class NsProcFs:
    """cgroup and namespace links per pid; everything else is unused by the docker attestor."""

    def __init__(self, cgroups: Mapping[int, str], namespaces: dict[int, tuple[str, ...]]) -> None:
        self.cgroups = cgroups
        self.namespaces = namespaces

    def cgroup(self, pid: int) -> str:
        return self.cgroups[pid]

    def namespace(self, pid: int, kind: str) -> str:
        try:
            return next(n for n in self.namespaces[pid] if n.startswith(f"{kind}:"))
        except (KeyError, StopIteration) as err:
            raise WorkloadAttestationError(f"procfs: cannot read the {kind} namespace of pid {pid!r}") from err

    def status(self, pid: int) -> str:
        raise NotImplementedError

    def open_status(self, pid: int) -> object:
        raise NotImplementedError

    def stat(self, pid: int) -> str:
        raise NotImplementedError

    def exe_path(self, pid: int) -> str:
        raise NotImplementedError

    def exe_sha256(self, pid: int, size_limit: int) -> str:
        raise NotImplementedError


class FakeEngine:
    def __init__(self, init_pid: int = INIT_PID) -> None:
        self.init_pid = init_pid
        self.calls = 0

    def inspect(self, container_id: str) -> ContainerInfo:
        self.calls += 1
        return ContainerInfo(labels={"app": "web"}, env=(), image="", image_id="", pid=self.init_pid)


WEB = frozenset({Selector("docker", "label:app:web")})
IN_CONTAINER = f"0::/docker/{CID}\n"


def _attestor(procfs: NsProcFs, engine: FakeEngine) -> DockerAttestor:
    return DockerAttestor(procfs, engine, monotonic=lambda: 100.0)  # type: ignore[arg-type]


def test_caller_sharing_the_init_namespaces_gets_the_selectors() -> None:
    procfs = NsProcFs({7: IN_CONTAINER}, {7: CONTAINER_NS, INIT_PID: CONTAINER_NS})
    engine = FakeEngine()
    attestor = _attestor(procfs, engine)
    assert asyncio.run(attestor.attest(pid_caller(7))) == WEB
    assert asyncio.run(attestor.attest(pid_caller(7))) == WEB
    assert engine.calls == 1  # cached with the init's namespaces


def test_caller_in_the_container_cgroup_but_host_namespaces_is_refused() -> None:
    """The cgroup names the container, the namespaces say the caller is on the host: no selectors."""
    procfs = NsProcFs({7: IN_CONTAINER, 8: IN_CONTAINER}, {7: CONTAINER_NS, 8: HOST_NS, INIT_PID: CONTAINER_NS})
    engine = FakeEngine()
    attestor = _attestor(procfs, engine)
    assert asyncio.run(attestor.attest(pid_caller(7))) == WEB
    for _ in range(3):
        with pytest.raises(WorkloadAttestationError, match="not in its namespaces"):
            asyncio.run(attestor.attest(pid_caller(8)))
    assert engine.calls == 1  # the init is still in the cached namespaces: no engine call for a refusal


def test_pid_host_container_is_told_apart_by_its_mount_namespace() -> None:
    """``--pid=host``: the pid namespace is the host's, the mount namespace is still the container's own."""
    pid_host = (CONTAINER_NS[0], HOST_NS[1])
    procfs = NsProcFs({7: IN_CONTAINER, 8: IN_CONTAINER}, {7: pid_host, 8: HOST_NS, INIT_PID: pid_host})
    attestor = _attestor(procfs, FakeEngine())
    assert asyncio.run(attestor.attest(pid_caller(7))) == WEB
    with pytest.raises(WorkloadAttestationError, match="not in its namespaces"):
        asyncio.run(attestor.attest(pid_caller(8)))


def test_restarted_container_is_inspected_again_within_the_cache_ttl() -> None:
    restarted = ("mnt:[4026532999]", "pid:[4026533000]")
    procfs = NsProcFs({7: IN_CONTAINER, 9: IN_CONTAINER}, {7: CONTAINER_NS, INIT_PID: CONTAINER_NS})
    engine = FakeEngine()
    attestor = _attestor(procfs, engine)
    assert asyncio.run(attestor.attest(pid_caller(7))) == WEB
    procfs.namespaces = {9: restarted, 600: restarted}  # the old init (500) is gone
    engine.init_pid = 600
    assert asyncio.run(attestor.attest(pid_caller(9))) == WEB
    assert engine.calls == 2


def test_stopped_container_is_refused() -> None:
    procfs = NsProcFs({7: IN_CONTAINER}, {7: CONTAINER_NS})
    with pytest.raises(WorkloadAttestationError, match="is not running"):
        asyncio.run(_attestor(procfs, FakeEngine(init_pid=0)).attest(pid_caller(7)))


def test_unreadable_namespace_is_an_attestation_error() -> None:
    procfs = NsProcFs({7: IN_CONTAINER}, {INIT_PID: CONTAINER_NS})
    with pytest.raises(WorkloadAttestationError, match="cannot read the mnt namespace"):
        asyncio.run(_attestor(procfs, FakeEngine()).attest(pid_caller(7)))


def test_process_outside_containers_needs_no_namespace_read() -> None:
    procfs = NsProcFs({7: "0::/user.slice/user-0.slice/session-1.scope\n"}, {})
    engine = FakeEngine()
    assert asyncio.run(_attestor(procfs, engine).attest(pid_caller(7))) == frozenset()
    assert engine.calls == 0

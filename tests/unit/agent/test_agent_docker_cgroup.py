"""container_id_from_cgroup against realistic /proc/<pid>/cgroup fixtures, and docker selectors."""

from __future__ import annotations

import pytest

from agent.attest.docker import (
    ContainerInfo,
    container_id_from_cgroup,
    container_selectors,
    parse_inspect,
    socket_path_from_docker_host,
)
from agent.errors import ContainerIdError, WorkloadAttestationError
from spiffe_py.selectors import Selector

CID = "9f8e5c3a1b2d4e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7"
OTHER = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
POD = "2c48913c-b29f-11e7-9350-020968147796"
POD_US = POD.replace("-", "_")

CASES = {
    "docker-cgroup-v1": (
        f"12:memory:/docker/{CID}\n11:cpu,cpuacct:/docker/{CID}\n1:name=systemd:/docker/{CID}\n"
        "0::/system.slice/containerd.service\n"
    ),
    "docker-cgroup-v2-systemd": f"0::/system.slice/docker-{CID}.scope\n",
    "containerd-cri-v2": (
        f"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_US}.slice/cri-containerd-{CID}.scope\n"
    ),
    "crio-v2": f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_US}.slice/crio-{CID}.scope\n",
    "podman-rootful": f"0::/machine.slice/libpod-{CID}.scope/container\n",
    "podman-rootless": (
        f"0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CID}.scope/container\n"
    ),
    "kubepods-v1": f"11:blkio:/kubepods/burstable/pod{POD}/{CID}\n10:memory:/kubepods/burstable/pod{POD}/{CID}\n",
    "private-cgroupns-v2": f"0::/../{CID}\n",
    "kind-on-docker": (
        f"12:memory:/docker/{OTHER}/kubepods/besteffort/pod{POD}/{CID}\n1:name=systemd:/docker/{OTHER}\n"
    ),
}


@pytest.mark.parametrize("fixture", sorted(CASES))
def test_container_id_from_cgroup_finds_id(fixture: str) -> None:
    assert container_id_from_cgroup(CASES[fixture]) == CID


@pytest.mark.parametrize(
    "text",
    [
        "0::/user.slice/user-0.slice/session-1.scope\n",
        "12:memory:/\n1:name=systemd:/init.scope\n",
        "",
        "0::/system.slice/docker-abc.scope\n",  # short id is not a container id
    ],
)
def test_container_id_from_cgroup_none_outside_container(text: str) -> None:
    assert container_id_from_cgroup(text) is None


def test_container_id_from_cgroup_rejects_disagreeing_lines() -> None:
    text = f"12:memory:/docker/{CID}\n11:cpu:/docker/{OTHER}\n"
    with pytest.raises(ContainerIdError, match="multiple container IDs found"):
        container_id_from_cgroup(text)


def test_container_id_from_cgroup_rejects_malformed_line() -> None:
    with pytest.raises(ContainerIdError, match="malformed cgroup line"):
        container_id_from_cgroup(f"/docker/{CID}\n")


def test_container_id_uppercase_hex_is_not_an_id() -> None:
    assert container_id_from_cgroup(f"0::/docker/{CID.upper()}\n") is None


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

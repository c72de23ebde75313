"""``/proc/<pid>/status``, ``/proc/<pid>/stat`` and ``/proc/<pid>/cgroup`` text.

The kernel writes these files, but a workload controls parts of them: its command name (in
``status`` and ``stat``) and, with a delegated cgroup subtree, its cgroup path names.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from spiffe_agent.attest.docker import container_id_from_cgroup
from spiffe_agent.attest.procfs import StatusIds, parse_stat_start_time, parse_status
from spiffe_agent.errors import ContainerIdError, WorkloadAttestationError
from tests.fuzz._fuzz import CHEAP, assert_outcome, attempt

_HEX64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
_NUMBERS = st.lists(
    st.one_of(st.integers(-(2**70), 2**70).map(str), st.sampled_from(["", "x", "٣", "1_0", "0x10", "\x00"])),
    max_size=5,
)


@st.composite
def status_texts(draw: st.DrawFn) -> str:
    """Status-like text: Name/Uid/Gid/Groups lines in any order, odd values, a hostile Name."""
    lines = [f"Name:\t{draw(st.text(max_size=30))}"]
    for key in draw(st.lists(st.sampled_from(["Uid", "Gid", "Groups", "Pid", "Uid ", "uid", "Umask"]), max_size=8)):
        lines.append(f"{key}:" + draw(st.sampled_from(["\t", " ", ""])) + "\t".join(draw(_NUMBERS)))
    return draw(st.sampled_from(["\n", "\r\n", "\n\n"])).join(lines)


@CHEAP
@given(st.one_of(st.text(max_size=400), status_texts()))
def test_parse_status_raises_only_attestation_error(text: str) -> None:
    outcome = attempt(parse_status, text)
    assert_outcome(outcome, StatusIds, WorkloadAttestationError)
    if isinstance(outcome, StatusIds):
        assert all(isinstance(v, int) for v in (outcome.euid, outcome.egid, *outcome.groups))


@st.composite
def stat_texts(draw: st.DrawFn) -> str:
    comm = draw(st.text(max_size=20))
    fields = draw(st.lists(st.one_of(st.integers(-(2**70), 2**70).map(str), st.text(max_size=4)), max_size=30))
    return f"{draw(st.integers(0, 2**22))} ({comm}) " + " ".join(fields)


@CHEAP
@given(st.one_of(st.text(max_size=300), stat_texts()))
def test_parse_stat_start_time_raises_only_attestation_error(text: str) -> None:
    assert_outcome(attempt(parse_stat_start_time, text), int, WorkloadAttestationError)


_SEGMENTS = st.one_of(
    _HEX64,
    _HEX64.map(lambda h: f"docker-{h}.scope"),
    _HEX64.map(lambda h: f"cri-containerd-{h}.scope"),
    _HEX64.map(lambda h: f"libpod-conmon-{h}.scope"),
    st.sampled_from(["docker", "system.slice", "kubepods", "kubepods.slice", "user.slice", "..", "", " "]),
    st.just("pod12345678-1234-1234-1234-123456789012"),
    st.text(max_size=20),
)


@st.composite
def cgroup_texts(draw: st.DrawFn) -> str:
    """cgroup v1/v2 lines ``id:controllers:path`` whose paths mix runtime layouts and garbage."""
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        path = "/" + "/".join(draw(st.lists(_SEGMENTS, max_size=6)))
        hierarchy = draw(st.sampled_from(["0", "1", "12", "", "x"]))
        controllers = draw(st.sampled_from(["", "cpu,cpuacct", "name=systemd", "memory", ":"]))
        lines.append(draw(st.sampled_from([f"{hierarchy}:{controllers}:{path}", path, f"{hierarchy}::{path}"])))
    return draw(st.sampled_from(["\n", "\r\n", "\x0b", "\u2028"])).join(lines)


@CHEAP
@given(st.one_of(st.text(max_size=400), cgroup_texts()))
def test_container_id_from_cgroup_raises_only_container_id_error(text: str) -> None:
    outcome = attempt(container_id_from_cgroup, text)
    assert_outcome(outcome, (str, type(None)), (ContainerIdError, WorkloadAttestationError))
    if isinstance(outcome, str):
        assert len(outcome) == 64 and outcome in text

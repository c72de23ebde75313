"""The procfs reads behind every Workload API attestation (issue 4, acceptance 7 speed-ups kept honest).

``LinuxProcFs._read`` reads with ``os.read`` in chunks instead of one buffered read of the whole cap;
these tests pin that the result is unchanged on the real /proc and that a read stays bounded.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from spiffe_agent.attest.base import CallerAttestor
from spiffe_agent.attest.caller import capture
from spiffe_agent.attest.procfs import LinuxProcFs, boot_ticks, parse_status
from spiffe_agent.attest.unix import SystemUserDb, UnixAttestor
from spiffe_agent.errors import WorkloadAttestationError
from spiffe_py.selectors import Selector

CAP = 1 << 20


def test_real_status_read_matches_file() -> None:
    """The chunked read of the real /proc/<pid>/status parses to this process's effective ids."""
    procfs = LinuxProcFs()
    text = procfs.status(os.getpid())
    assert text.splitlines()[0].startswith("Name:")
    ids = parse_status(text)
    assert (ids.euid, ids.egid) == (os.geteuid(), os.getegid())


def test_read_is_capped_at_one_mib(tmp_path: Path) -> None:
    """A file larger than the cap (a hostile or odd procfs root) yields at most the cap, never more."""
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cgroup").write_bytes(b"0::/x\n" * (CAP // 3))
    assert len(LinuxProcFs(str(tmp_path)).cgroup(7)) == CAP


def test_missing_process_is_attestation_error(tmp_path: Path) -> None:
    with pytest.raises(WorkloadAttestationError, match="cannot read status of pid 9"):
        LinuxProcFs(str(tmp_path)).status(9)


async def test_unix_attestor_inline_path_gives_effective_ids() -> None:
    """Without path discovery the unix attestor runs inline; selectors are still the effective ids (WA-*)."""
    procfs = LinuxProcFs()
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        caller = capture(a, procfs, accepted_at=boot_ticks())
        try:
            selectors = await CallerAttestor([UnixAttestor(procfs, SystemUserDb())]).attest(caller)
        finally:
            caller.close()
    assert Selector("unix", f"uid:{os.geteuid()}") in selectors
    assert Selector("unix", f"gid:{os.getegid()}") in selectors
    assert not any(s.value.startswith(("path:", "sha256:")) for s in selectors)

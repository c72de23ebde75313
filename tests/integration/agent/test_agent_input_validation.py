"""Hostile inputs to a real agent's Workload API and CLI: a precise error, and the next caller is served."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.agent.conftest import TD, Env

WORKLOAD_ID = f"spiffe://{TD}/workload"


def _fetch_jwt_ok(env: Env) -> None:
    out = env.agent_cli("api", "fetch", "jwt", "--audience", "svc", "--output", "json").stdout
    assert [s["spiffe_id"] for s in json.loads(out)] == [WORKLOAD_ID]


def test_oversized_audience_is_invalid_argument(env: Env) -> None:
    """A 100 KB audience used to reach the server and the audit trail and come back INTERNAL, every call.

    Now a 10 KB audience is INVALID_ARGUMENT (the audience bound), and a 100 KB one never gets past
    the Workload API's 64 KiB message limit (RESOURCE_EXHAUSTED, refused on its length prefix).
    """
    res = env.agent_cli("api", "fetch", "jwt", "--audience", "a" * 10_000, check=False)
    assert res.returncode == 1
    assert res.stderr.strip() == "error: INVALID_ARGUMENT: audience values must be at most 256 characters"
    res = env.agent_cli("api", "validate", "jwt", "--audience", "a" * 10_000, "--svid", "x.y.z", check=False)
    assert res.returncode == 1
    assert res.stderr.strip() == "error: INVALID_ARGUMENT: audience must be at most 256 characters"
    res = env.agent_cli("api", "fetch", "jwt", "--audience", "a" * 100_000, check=False)
    assert res.returncode == 1 and res.stderr.startswith("error: RESOURCE_EXHAUSTED: "), res.stderr
    _fetch_jwt_ok(env)
    assert "Traceback" not in env.dump()


def test_write_failure_is_reported_as_such(env: Env, tmp_path: Path) -> None:
    """`--write` under a path that is not a directory names the write, not an unreachable agent."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = env.agent_cli("api", "fetch", "x509", "--write", str(blocker / "svid"), check=False)
    assert res.returncode == 1
    assert res.stderr.strip() == f"error: --write: cannot write {str(blocker / 'svid')!r}: Not a directory"

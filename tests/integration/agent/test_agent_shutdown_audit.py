"""A real agent stopped by SIGTERM right after a request keeps that request's audit record.

Real server + agent subprocesses (the agent integration launcher), with a long
``audit_flush_interval`` so the group-commit flusher has not fsynced yet. It checks a clean
exit (code 0), the record in the file and an intact chain. It does NOT catch a missing
``AgentAudit.close()``: every record is written with write(2) before the request returns, so it is in
the file after a process exit with or without the final fsync; only a power loss (not
reproducible here) would tell the two apart.
"""

from __future__ import annotations

import os
import signal

from spiffe_py.audit import load_jsonl, verify_chain
from tests.integration.agent.conftest import running_env


def test_sigterm_right_after_fetch_jwt_keeps_the_audit_record_and_chain() -> None:
    with running_env([("/workload", f"unix:uid:{os.geteuid()}")]) as env:
        config = env.root / "agent.toml"
        config.write_text('audit_fsync = "interval"\naudit_flush_interval = 10.0\n')
        assert env.agent is not None
        env.stop(env.agent)  # restart (attested already) with the config file; same data dir, chain resumes
        env.start_agent(None, ("--config", str(config)))
        env.wait_agent_ready()
        assert env.agent_cli("api", "fetch", "jwt", "--audience", "shutdown-test").returncode == 0
        assert env.agent is not None
        env.agent.send_signal(signal.SIGTERM)
        assert env.agent.wait(30) == 0, env.dump()
        records = load_jsonl(env.root / "agent" / "audit.jsonl")
        assert verify_chain(records).ok
        fetches = [r for r in records if r["method"] == "FetchJWTSVID" and r["decision"] == "allow"]
        assert fetches and fetches[-1]["details"]["audiences"] == ["shutdown-test"]

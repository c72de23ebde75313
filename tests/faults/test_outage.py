"""A server outage longer than the SVID TTL: the agent never hands out an expired SVID, and it
re-attests by itself (x509pop) once the server is back.

Re-attestation itself is also covered in tests/integration/agent/test_agent_x509pop.py; this
test samples the Workload API all through the outage.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes

from spiffe_py.workloadapi import WorkloadApiClient
from tests.integration.agent.test_agent_x509pop import _agent_svid, _fetch_ok, _wait, node  # noqa: F401
from tests.support.agent_proc import AgentProc
from tests.support.ca import Issued
from tests.support.server_proc import ServerProc

TD = "example.org"
SVID_TTL_S = 10


def _sample(agent: AgentProc) -> str:
    """'ok' (an SVID valid now), 'error' (refused: acceptable), or 'EXPIRED ...' (never acceptable)."""
    try:
        with WorkloadApiClient(agent.address, timeout=3) as client:
            svid = client.fetch_x509_svid()
    except Exception:
        return "error"
    now = datetime.now(UTC)
    leaf = svid.leaf
    if leaf.not_valid_after_utc <= now:
        return f"EXPIRED {leaf.not_valid_after_utc.isoformat()} at {now.isoformat()}"
    return "ok"


def test_outage_longer_than_the_svid_ttl_never_serves_an_expired_svid(
        node: tuple[Issued, Path, Path, Path]) -> None:  # noqa: F811
    issued, ca_file, cert_file, key_file = node
    agent_id = f"spiffe://{TD}/spire/agent/x509pop/{issued.leaf.fingerprint(hashes.SHA1()).hex()}"
    config = (f'default_x509_svid_ttl = "{SVID_TTL_S}s"\n'
              f'[node_attestors.x509pop]\nca_bundle_path = "{ca_file}"\n')
    flags = ("--node-attestor", "x509pop", "--x509pop-cert", str(cert_file), "--x509pop-key", str(key_file))
    with ServerProc.start(trust_domain=TD, config_text=config) as srv, \
            AgentProc.start(srv, "xp", node_attestation=(flags, agent_id)) as agent:
        workload = f"spiffe://{TD}/w"
        srv.cli("entry", "create", "--spiffe-id", workload, "--parent-id", agent_id,
                "--selector", f"unix:uid:{os.geteuid()}")
        agent.wait_ready()
        _wait(lambda: _fetch_ok(agent, workload), 30, "the workload's SVID")
        first = _agent_svid(agent)
        srv.stop()
        samples: list[str] = []
        outage_end = first.not_valid_after_utc.timestamp() + 2  # past the agent's and the workload's SVIDs
        while time.time() < outage_end:
            samples.append(_sample(agent))
            time.sleep(0.5)
        srv.launch()
        _wait(lambda: _agent_svid(agent).serial_number != first.serial_number, 60, "re-attestation")
        _wait(lambda: _fetch_ok(agent, workload), 30, "a workload SVID after re-attestation")
        expired = [s for s in samples if s.startswith("EXPIRED")]
        print(f"during the outage: {samples.count('ok')} valid, {samples.count('error')} refused, "
              f"{len(expired)} expired")
        assert expired == [], expired[:3]
        assert samples.count("ok") > 0 and samples.count("error") > 0  # served while valid, refused after

"""One real world for the AI-provider tests: a spiffe-server publishing OIDC discovery over HTTPS,
an agent, a registration entry for this test process (10 s X.509 and JWT TTLs), and the
provider stand-ins (examples/openai_without_a_key/standins.py) registered with that issuer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from examples.oidc_token_exchange.sts import Registration
from examples.openai_without_a_key.standins import ANTHROPIC_HOSTS, OPENAI_HOSTS, Federation, StandIns, web_pki
from spiffe_py.workloadapi import WorkloadApiClient
from tests.support.agent_proc import AgentProc
from tests.support.server_proc import ServerProc, free_port
from tests.support.web_pki import WebPki

TD = "example.org"
WORKLOAD_ID = f"spiffe://{TD}/ai/billing"
OPENAI_AUDIENCE = "https://api.openai.com/v1"
ANTHROPIC_AUDIENCE = "https://api.anthropic.com"
SVID_TTL = "10"
SDK_RUN_S = 40
SDK_APPS = ("openai", "anthropic", "openai-x509")


@dataclass
class World:
    server: ServerProc
    agent: AgentProc
    bare_agent: AgentProc  # a second agent with no entry for this process
    issuer: str
    oidc_pki: WebPki
    standins: StandIns
    web_root: Path
    tmp: Path

    @property
    def address(self) -> str:
        return self.agent.address

    def sdk_env(self) -> dict[str, str]:
        from examples.openai_without_a_key.standins import sdk_env

        return {**sdk_env(self.standins, self.web_root), "SPIFFE_ENDPOINT_SOCKET": self.address}


def wait_for_svid(address: str, spiffe_id: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    with WorkloadApiClient(address, timeout=5) as client:
        while True:
            try:
                if any(str(s.spiffe_id) == spiffe_id for s in client.fetch_x509_svids()):
                    return
            except Exception:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise AssertionError(f"the agent never served {spiffe_id}")
            time.sleep(0.2)


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("ai")
    pki = WebPki.create()
    cert_file, key_file = tmp / "oidc.pem", tmp / "oidc.key"
    pki.write_serving(cert_file, key_file, ["localhost"])
    port = free_port()
    issuer = f"https://localhost:{port}"
    # RS256 JWT-SVIDs (what Azure requires) from an EC X.509 CA: every test here runs on that split
    config = (f'jwt_key_type = "rsa-2048"\n[oidc]\nbind_address = "127.0.0.1"\nbind_port = {port}\n'
              f'issuer = "{issuer}"\n'
              f'cert_file = "{cert_file}"\nkey_file = "{key_file}"\n')
    web_root, web_cert, web_key = web_pki(tmp, [*OPENAI_HOSTS, *ANTHROPIC_HOSTS])
    federation = Federation(openai_registration=Registration(issuer, OPENAI_AUDIENCE, pki.client_context()),
                            anthropic_registration=Registration(issuer, ANTHROPIC_AUDIENCE, pki.client_context()),
                            subject=WORKLOAD_ID)
    with ServerProc.start(trust_domain=TD, config_text=config) as srv, AgentProc.start(srv, "a1") as agent, \
            AgentProc.start(srv, "no-entries") as bare_agent:
        agent.wait_ready()  # both start at once
        bare_agent.wait_ready()
        srv.cli("entry", "create", "--spiffe-id", WORKLOAD_ID, "--parent-id", agent.agent_id,
                "--selector", f"unix:uid:{os.geteuid()}", "--x509-svid-ttl", SVID_TTL, "--jwt-svid-ttl", SVID_TTL)
        wait_for_svid(agent.address, WORKLOAD_ID)
        federation.x509_ca_pem = srv.cli("bundle", "show", "--format", "pem").stdout.encode()
        standins = StandIns(federation, web_cert, web_key)
        try:
            yield World(srv, agent, bare_agent, issuer, pki, standins, web_root, tmp)
        finally:
            standins.close()


@dataclass
class SdkRuns:
    """The three SDK apps (examples/openai_without_a_key/app.py), each calling for SDK_RUN_S seconds."""

    started: float
    procs: dict[str, subprocess.Popen[bytes]]
    out_dir: Path

    def results(self) -> dict[str, dict[str, object]]:
        """Wait for every app; each one's JSON summary (asserts each exited 0)."""
        results = {}
        for name, proc in self.procs.items():
            proc.wait(SDK_RUN_S + 90)
            out = (self.out_dir / f"{name}.out").read_text()
            err = (self.out_dir / f"{name}.err").read_text()
            assert proc.returncode == 0, f"{name} app failed: {out}\n{err[-3000:]}"
            results[name] = json.loads(out.strip().splitlines()[-1])
        return results


@pytest.fixture(scope="package")
def sdk_runs(world: World) -> Iterator[SdkRuns]:
    """Started once: the SDK test collects the results; the helper test asks for it too, so its 60 s
    nginx run and these 40 s share wall-clock time (CI budget) and the agent serves both at once."""
    out_dir = world.tmp / "sdk"
    out_dir.mkdir()
    procs = {}
    for name in SDK_APPS:
        with (out_dir / f"{name}.out").open("wb") as out, (out_dir / f"{name}.err").open("wb") as err:
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "examples.openai_without_a_key.app", "--provider", name, "--seconds",
                 str(SDK_RUN_S), "--interval", "0.25"], env=world.sdk_env(), stdout=out, stderr=err)
    runs = SdkRuns(time.time(), procs, out_dir)
    yield runs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()

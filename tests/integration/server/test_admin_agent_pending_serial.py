"""`spiffe-server agent show|list` print an agent's pending SVID serial while there is one.

A real RenewAgent (the test client plays the agent) leaves the new SVID pending; the CLI then
shows it as ``new_serial``/``new_expires_at`` (pretty: ``New serial``/``New expires at``) beside the current
``serial``. The first call made
with the new SVID promotes it, and the pending fields disappear again (docs/security.md).
"""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status

from spiffe_py._cli import rfc3339
from spiffe_py._proto.spiffepy.server.v1 import agent_pb2
from spiffe_server.revocation import serial_hex
from tests.integration.server.agent_client import TestAgent, agent_channel, attest, csr_for, server_roots
from tests.support.server_proc import ServerProc

TD = "spiffe://example.org"


def _serial(agent: TestAgent) -> str:
    return serial_hex(agent.chain[0].serial_number)


def _not_after(agent: TestAgent) -> int:
    return int(agent.chain[0].not_valid_after_utc.timestamp())


def _show(srv: ServerProc, agent: TestAgent) -> dict[str, Any]:
    shown: dict[str, Any] = srv.cli_json("agent", "show", "--spiffe-id", agent.spiffe_id)
    return shown


def _pretty(srv: ServerProc, agent: TestAgent) -> str:
    return srv.cli("agent", "show", "--spiffe-id", agent.spiffe_id, "--output", "pretty").stdout


def _field(lines: list[str], label: str) -> str:
    """The value of the aligned ``label : value`` line."""
    return next(line.split(" : ", 1)[1] for line in lines if line.split(" : ", 1)[0].strip() == label)


async def _renew(srv: ServerProc, agent: TestAgent, roots: str) -> TestAgent:
    key = ec.generate_private_key(ec.SECP256R1())
    async with agent_channel(srv, agent, roots) as stub:
        resp = await stub.RenewAgent(agent_pb2.RenewAgentRequest(csr=csr_for(key)))
    return TestAgent(agent.spiffe_id, [x509.load_der_x509_certificate(d) for d in resp.svid_chain], key, agent.result)


async def _mint(srv: ServerProc, agent: TestAgent, roots: str, entry_id: str) -> None:
    """One authenticated Agent API call with ``agent``'s SVID (promotes it when it is the pending one)."""
    key = ec.generate_private_key(ec.SECP256R1())
    async with agent_channel(srv, agent, roots) as stub:
        resp = await stub.BatchNewX509SVID(agent_pb2.BatchNewX509SVIDRequest(params=[
            agent_pb2.NewX509SVIDParams(entry_id=entry_id, csr=csr_for(key, f"{TD}/web"))]))
    assert resp.results[0].status_code == Status.OK.value, resp.results[0].status_message


async def test_agent_show_and_list_print_the_pending_serial_until_it_is_promoted(server: ServerProc) -> None:
    old = await attest(server, "join_token", server.cli_json("token", "generate")["value"].encode())
    entry_id = str(server.cli_json("entry", "create", "--parent-id", old.spiffe_id, "--spiffe-id", f"{TD}/web",
                                   "--selector", "unix:uid:1000")["id"])
    roots = server_roots(server)

    fresh = _show(server, old)
    assert fresh["serial"] == _serial(old)
    assert "new_serial" not in fresh and "new_expires_at" not in fresh  # nothing pending: nothing extra
    assert "New serial" not in _pretty(server, old)

    new = await _renew(server, old, roots)
    assert _serial(new) != _serial(old)
    shown = _show(server, old)
    assert (shown["serial"], shown["expires_at"]) == (_serial(old), _not_after(old))
    assert (shown["new_serial"], shown["new_expires_at"]) == (_serial(new), _not_after(new))
    assert server.cli_json("agent", "list")["agents"] == [shown]
    pretty = _pretty(server, old).splitlines()
    assert _field(pretty, "Serial") == _serial(old)
    assert _field(pretty, "New serial") == _serial(new)
    assert _field(pretty, "New expires at").startswith(rfc3339(_not_after(new)) + " (in ")
    listed = server.cli("agent", "list", "--output", "pretty").stdout.splitlines()
    assert _field(listed, "New serial") == _serial(new) and _field(listed, "Status") == "active"

    await _mint(server, new, roots, entry_id)  # first use of the new SVID promotes it
    promoted = _show(server, old)
    assert (promoted["serial"], promoted["expires_at"]) == (_serial(new), _not_after(new))
    assert "new_serial" not in promoted and "new_expires_at" not in promoted
    assert "New serial" not in _pretty(server, old)
    assert "New serial" not in server.cli("agent", "list", "--output", "pretty").stdout

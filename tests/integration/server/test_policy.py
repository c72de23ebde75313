"""Request-time policy on a real spiffe-server: denials, labels without restart, TTL caps, reload, quarantine.

Issue 6 acceptance 1 and 2 (server side).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_py._proto.spiffepy.server.v1 import agent_pb2
from spiffe_server.app import POLICY_POLL_SECONDS
from tests.integration.server.agent_client import TestAgent, agent_channel, attest, csr_for
from tests.support.server_proc import ServerProc

TD = "spiffe://example.org"
PAY = f"{TD}/pay"

POLICY = '''
[[rule]]
name = "payments-needs-approval"
when = '"payments" in request.audiences && !(has(entry.labels.approved) && entry.labels.approved == "true")'
effect = "deny"
reason = "payments needs human approval"

[[rule]]
name = "short-lived"
when = 'has(entry.labels.short)'
effect = "allow"
reason = "short tasks get short SVIDs"
max_ttl = 120
'''


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def server(policy_file: Path) -> Iterator[ServerProc]:
    with ServerProc.start(extra_args=["--policy", str(policy_file)]) as srv:
        yield srv


def _entry(srv: ServerProc, spiffe_id: str, parent: str, *extra: str) -> str:
    entry_id: str = srv.cli_json("entry", "create", "--parent-id", parent, "--spiffe-id", spiffe_id,
                                 "--selector", "unix:uid:1000", *extra)["id"]
    return entry_id


async def _agent(srv: ServerProc) -> TestAgent:
    return await attest(srv, "join_token", srv.cli_json("token", "generate")["value"].encode())


async def _jwt(srv: ServerProc, agent: TestAgent, entry_id: str, audience: str) -> str:
    async with agent_channel(srv, agent) as stub:
        resp = await stub.NewJWTSVID(agent_pb2.NewJWTSVIDRequest(entry_id=entry_id, audience=[audience]))
    return str(resp.token)


async def _denied(srv: ServerProc, agent: TestAgent, entry_id: str, audience: str) -> str:
    with pytest.raises(GRPCError) as err:
        await _jwt(srv, agent, entry_id, audience)
    assert err.value.status is Status.PERMISSION_DENIED
    return str(err.value.message)


def _mint_jwt(srv: ServerProc, audience: str) -> tuple[int, str]:
    result = srv.cli("jwt", "mint", "--spiffe-id", PAY, "--audience", audience, check=False)
    return result.returncode, result.stderr


async def test_agent_jwt_for_payments_follows_the_approved_label_without_restart(server: ServerProc) -> None:
    """Acceptance 1 (server side): deny with the reason, allow after --label, deny after --remove-label."""
    agent = await _agent(server)
    entry_id = _entry(server, PAY, agent.spiffe_id)
    assert "payments needs human approval" in await _denied(server, agent, entry_id, "payments")
    assert jwt.decode(await _jwt(server, agent, entry_id, "db"), options={"verify_signature": False})["sub"] == PAY

    patched = server.cli_json("entry", "update", "--entry-id", entry_id, "--label", "approved=true")
    assert patched["labels"] == {"approved": "true"} and patched["selectors"] == ["unix:uid:1000"]
    claims = jwt.decode(await _jwt(server, agent, entry_id, "payments"), options={"verify_signature": False})
    assert claims["aud"] == ["payments"] or claims["aud"] == "payments"

    assert server.cli_json("entry", "update", "--entry-id", entry_id, "--remove-label", "approved")["labels"] == {}
    assert "payments needs human approval" in await _denied(server, agent, entry_id, "payments")


def test_admin_jwt_mint_is_evaluated_against_the_entry_with_that_spiffe_id(server: ServerProc) -> None:
    """``jwt mint`` maps to the entries whose SPIFFE ID equals --spiffe-id (none: empty labels)."""
    code, stderr = _mint_jwt(server, "payments")
    assert code == 1 and "PERMISSION_DENIED" in stderr and "payments needs human approval" in stderr
    entry_id = _entry(server, PAY, f"{TD}/node", "--label", "approved=true")
    assert _mint_jwt(server, "payments") == (0, "")
    server.cli("entry", "update", "--entry-id", entry_id, "--remove-label", "approved")
    code, stderr = _mint_jwt(server, "payments")
    assert code == 1 and "payments needs human approval" in stderr


def _leaf_lifetime(chain: list[bytes]) -> timedelta:
    """How long the leaf is still valid (NotBefore is backdated for clock skew, so not NotAfter - NotBefore)."""
    return x509.load_der_x509_certificate(chain[0]).not_valid_after_utc - datetime.now(UTC)


async def _batch(srv: ServerProc, agent: TestAgent, entry_id: str, spiffe_id: str) -> agent_pb2.X509SVIDResult:
    key = ec.generate_private_key(ec.SECP256R1())
    req = agent_pb2.BatchNewX509SVIDRequest(params=[agent_pb2.NewX509SVIDParams(
        entry_id=entry_id, csr=csr_for(key, spiffe_id))])
    async with agent_channel(srv, agent) as stub:
        resp = await stub.BatchNewX509SVID(req)
    result: agent_pb2.X509SVIDResult = resp.results[0]
    return result


def _wait_for_log(srv: ServerProc, text: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = srv.log_text()
        if text in log:
            return log
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not logged:\n{srv.log_text()}")


async def test_max_ttl_shortens_svids_and_a_broken_reload_keeps_the_old_policy(server: ServerProc,
                                                                               policy_file: Path) -> None:
    """Acceptance 2: the TTL cap applies to agent CSRs and x509 mint; a bad reload is refused, old rules stay."""
    agent = await _agent(server)
    short = _entry(server, f"{TD}/short", agent.spiffe_id, "--label", "short=1")
    normal = _entry(server, f"{TD}/normal", agent.spiffe_id)
    capped = await _batch(server, agent, short, f"{TD}/short")
    assert capped.status_code == Status.OK.value
    assert timedelta(seconds=100) < _leaf_lifetime(list(capped.cert_chain)) <= timedelta(seconds=120)
    uncapped = await _batch(server, agent, normal, f"{TD}/normal")
    assert _leaf_lifetime(list(uncapped.cert_chain)) > timedelta(minutes=30)

    policy_file.write_text(POLICY + '\n[[rule]]\nname = "broken"\nwhen = "request.audiences +"\n'
                                    'effect = "deny"\nreason = "x"\n')
    log = _wait_for_log(server, "policy refused")
    assert f"{policy_file}:" in log.split("policy refused", 1)[1].splitlines()[0]
    again = await _batch(server, agent, short, f"{TD}/short")
    assert _leaf_lifetime(list(again.cert_chain)) <= timedelta(seconds=120)
    assert "payments needs human approval" in await _denied(server, agent, short, "payments")

    policy_file.write_text("rule = []\n")  # removing every rule is said explicitly: then all is allowed
    _wait_for_log(server, "policy reloaded")
    assert (await _jwt(server, agent, short, "payments")).count(".") == 2


def _wait_for_count(srv: ServerProc, text: str, more_than: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.log_text().count(text) > more_than:
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not logged more than {more_than} times:\n{srv.log_text()}")


# A commented policy as an editor or config tool writes it; its first half holds no [[rule]].
COMMENTED = "".join(f"# payments policy: line {i} of the change-managed header\n" for i in range(12)) + POLICY


def test_emptied_or_half_written_policy_file_keeps_the_old_rules(server: ServerProc, policy_file: Path) -> None:
    """A 0-byte or half-written policy file on hot reload must not turn the server into "allow all"."""
    assert "payments needs human approval" in _mint_jwt(server, "payments")[1]
    policy_file.write_text(COMMENTED)
    _wait_for_count(server, "policy reloaded", 0)
    for attempt, text in enumerate(["", COMMENTED[:len(COMMENTED) // 2]]):
        assert "[[rule]]" not in text
        refused = server.log_text().count("policy refused")
        with policy_file.open("w") as fh:  # truncate in place, as a crashed or interrupted writer leaves it
            fh.write(text)
        if attempt == 0:
            _wait_for_count(server, "policy refused", refused)
            line = server.log_text().split("policy refused")[-1].splitlines()[0]
            assert "write 'rule = []' to remove every rule on purpose" in line, (attempt, line)
        else:  # a second refusal within 10 s is folded into one log line (RepeatFilter): give the poll time
            time.sleep(8 * POLICY_POLL_SECONDS)
        code, stderr = _mint_jwt(server, "payments")
        assert code == 1 and "payments needs human approval" in stderr, (attempt, stderr)
    assert server.log_text().count("policy reloaded") == 1
    policy_file.write_text("rule = []\n")
    _wait_for_count(server, "policy reloaded", 1)
    assert _mint_jwt(server, "payments") == (0, "")


def test_server_refuses_to_start_on_a_broken_policy(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[rule]]\nname = "x"\nwhen = "1 +"\neffect = "deny"\nreason = "r"\n')
    with pytest.raises(AssertionError) as err:
        ServerProc.start(extra_args=["--policy", str(path)]).close()
    assert f"{path}:3" in str(err.value)


async def test_quarantine_denies_every_mint_until_cleared(server: ServerProc) -> None:
    agent = await _agent(server)
    entry_id = _entry(server, f"{TD}/q", agent.spiffe_id, "--label", "approved=true")
    assert (await _batch(server, agent, entry_id, f"{TD}/q")).status_code == Status.OK.value
    shown = server.cli_json("entry", "quarantine", "--entry-id", entry_id, "--reason", "first-seen audience")
    assert shown["quarantined"] is True

    result = await _batch(server, agent, entry_id, f"{TD}/q")
    assert (result.status_code, result.status_message) == (Status.PERMISSION_DENIED.value,
                                                           "entry quarantined: first-seen audience")
    assert "entry quarantined: first-seen audience" in await _denied(server, agent, entry_id, "db")
    # a replacing update does not lift it; only --clear-quarantine does
    server.cli("entry", "update", "--entry-id", entry_id, "--spiffe-id", f"{TD}/q", "--parent-id", agent.spiffe_id,
               "--selector", "unix:uid:1000")
    assert "entry quarantined" in await _denied(server, agent, entry_id, "db")
    cleared = server.cli_json("entry", "update", "--entry-id", entry_id, "--clear-quarantine")
    assert cleared["quarantined"] is False
    assert (await _batch(server, agent, entry_id, f"{TD}/q")).status_code == Status.OK.value


def test_entry_update_patch_flags_are_checked(server: ServerProc) -> None:
    entry_id = _entry(server, PAY, f"{TD}/node")
    result = server.cli("entry", "update", "--entry-id", entry_id, "--selector", "unix:uid:1", check=False)
    assert result.returncode == 1 and "--selector: needs --spiffe-id" in result.stderr
    result = server.cli("entry", "update", "--entry-id", entry_id, check=False)
    assert result.returncode == 1 and "--clear-quarantine" in result.stderr
    result = server.cli("entry", "update", "--entry-id", "nope", "--label", "a=b", check=False)
    assert result.returncode == 1 and "NOT_FOUND" in result.stderr

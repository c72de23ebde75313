"""Authority taint/revoke and task-bound entries on a real spiffe-server (issue 5)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import jwt as pyjwt
import pytest
from cryptography import x509
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_py.spiffeid import TrustDomain
from spiffe_server.nodeattest.join_token import join_token_agent_id
from tests.integration.server.agent_client import agent_channel, attest
from tests.integration.server.revocation_support import (
    TD,
    entry,
    new_jwt,
    new_x509,
    next_matching,
    sync_stream,
    token,
)
from tests.support.server_proc import ServerProc


def _authorities(srv: ServerProc, kind: str, action: str = "show", *extra: str) -> list[dict[str, object]]:
    return list(srv.cli_json("localauthority", kind, action, *extra)["authorities"])


def _aki(cert: x509.Certificate) -> str:
    key_id = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert key_id is not None
    return key_id.hex()


def test_authority_preconditions(server: ServerProc) -> None:
    """SPIRE LocalAuthority rules: only an old authority is tainted, only a tainted one revoked."""
    (active,) = _authorities(server, "x509")
    assert active["status"] == "active" and active["tainted"] is False
    aid = str(active["authority_id"])
    for action, expected in (("revoke", "must be tainted before it is revoked"),
                             ("taint", f"only an old authority can be tainted; '{aid}' is active")):
        result = server.cli("localauthority", "x509", action, "--authority-id", aid, check=False)
        assert result.returncode == 1 and "FAILED_PRECONDITION" in result.stderr and expected in result.stderr
    result = server.cli("localauthority", "x509", "taint", check=False)
    assert result.returncode == 1 and "--authority-id is required" in result.stderr
    result = server.cli("localauthority", "jwt", "taint", "--authority-id", "no-such-kid", check=False)
    assert result.returncode == 1 and "NOT_FOUND" in result.stderr
    result = server.cli("localauthority", "x509", "activate", check=False)
    assert result.returncode == 1 and "FAILED_PRECONDITION: ca: there is no prepared authority" in result.stderr
    assert _authorities(server, "x509") == [active]


async def test_taint_then_revoke_x509_authority_reaches_the_stream(server: ServerProc) -> None:
    """Issue 5 acceptance 4 (server side): the taint is pushed, new SVIDs come from the new CA, revoke drops it."""
    agent = await attest(server, "join_token", token(server).encode())
    web = await asyncio.to_thread(entry, server, f"{TD}/taint-web", agent.spiffe_id)
    (old,) = await asyncio.to_thread(_authorities, server, "x509")
    old_id = str(old["authority_id"])
    async with agent_channel(server, agent) as stub, sync_stream(stub) as (stream, full):
        assert not full.bundle.tainted_x509_authorities
        assert _aki(await new_x509(stub, web, f"{TD}/taint-web")) == old_id
        prepared = await asyncio.to_thread(_authorities, server, "x509", "prepare")
        new_id = next(str(a["authority_id"]) for a in prepared if a["status"] == "prepared")
        await asyncio.to_thread(_authorities, server, "x509", "activate", "--authority-id", new_id)
        started = time.monotonic()
        tainted = await asyncio.to_thread(_authorities, server, "x509", "taint", "--authority-id", old_id)
        assert {(a["authority_id"], a["status"], a["tainted"]) for a in tainted} == {(old_id, "old", True),
                                                                                       (new_id, "active", False)}
        msg = await next_matching(stream, lambda m: list(m.bundle.tainted_x509_authorities) == [old_id])
        print(f"taint reached the stream {time.monotonic() - started:.3f}s after the CLI started")
        assert len(msg.bundle.x509_authorities) == 2
        assert _aki(await new_x509(stub, web, f"{TD}/taint-web")) == new_id  # re-issue lands on the new CA
        await asyncio.to_thread(_authorities, server, "x509", "revoke", "--authority-id", old_id)
        msg = await next_matching(stream, lambda m: m.HasField("bundle") and len(m.bundle.x509_authorities) == 1)
        (root,) = [x509.load_der_x509_certificate(d) for d in msg.bundle.x509_authorities]
        assert root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex() == new_id
        assert not msg.bundle.tainted_x509_authorities
    assert [a["authority_id"] for a in await asyncio.to_thread(_authorities, server, "x509")] == [new_id]


async def test_taint_jwt_authority_marks_the_key(server: ServerProc) -> None:
    agent = await attest(server, "join_token", token(server).encode())
    (old,) = await asyncio.to_thread(_authorities, server, "jwt")
    async with agent_channel(server, agent) as stub, sync_stream(stub) as (stream, _):
        await asyncio.to_thread(_authorities, server, "jwt", "prepare")
        await asyncio.to_thread(_authorities, server, "jwt", "activate")
        await asyncio.to_thread(_authorities, server, "jwt", "taint", "--authority-id", str(old["authority_id"]))
        msg = await next_matching(stream, lambda m: any(k.tainted for k in m.bundle.jwt_authorities))
        assert [k.key_id for k in msg.bundle.jwt_authorities if k.tainted] == [old["authority_id"]]


def test_expires_at_in_the_past_and_reserved_claims_are_refused(server: ServerProc) -> None:
    base = ("entry", "create", "--spiffe-id", f"{TD}/bad", "--parent-id", f"{TD}/node", "--selector", "unix:uid:1")
    for extra, message in (
        (("--expires-at", "1000"), "INVALID_ARGUMENT: entry.expires_at: is in the past: 1000"),
        (("--expires-at", "2001-01-01T00:00:00Z"), "INVALID_ARGUMENT: entry.expires_at: is in the past"),
        (("--expires-at", "2030-01-01T00:00:00"), "RFC 3339 time needs a zone"),
        (("--expires-at", "tomorrow"), "must be Unix seconds or RFC 3339"),
        (("--jwt-claim", "sub=spiffe://example.org/evil"), "INVALID_ARGUMENT: entry.jwt_claims: reserved claims "
                                                            "cannot be set: ['sub']"),
        (("--jwt-claim", "exp=1", "--jwt-claim", "jti=x"), "reserved claims cannot be set: ['exp', 'jti']"),
    ):
        result = server.cli(*base, *extra, check=False)
        assert result.returncode != 0 and message in result.stderr, (extra, result.stderr)
    assert server.cli_json("entry", "count")["count"] == 0


async def test_task_end_caps_every_svid_and_extra_claims_are_minted(server: ServerProc) -> None:
    """Issue 5 task-bound entries: NotAfter/exp capped at --expires-at and --max-lifetime; extra JWT claims."""
    agent = await attest(server, "join_token", token(server).encode())
    end = int(time.time()) + 120
    rfc3339 = datetime.fromtimestamp(end, UTC).isoformat().replace("+00:00", "Z")
    task = await asyncio.to_thread(entry, server, f"{TD}/task-run", agent.spiffe_id, "--expires-at", rfc3339,
                                   "--jwt-claim", "task_id=run-42", "--jwt-claim", "intent=deploy")
    shown = (await asyncio.to_thread(server.cli_json, "entry", "show", "--entry-id", task))["entries"][0]
    assert shown["expires_at"] == end and shown["jwt_claims"] == {"intent": "deploy", "task_id": "run-42"}
    short = await asyncio.to_thread(entry, server, f"{TD}/task-short", agent.spiffe_id, "--max-lifetime", "60")
    created = (await asyncio.to_thread(server.cli_json, "entry", "show", "--entry-id", short))["entries"][0]
    async with agent_channel(server, agent) as stub:
        leaf = await new_x509(stub, task, f"{TD}/task-run")
        assert leaf.not_valid_after_utc.timestamp() == end  # default TTL is 1h: capped at the task end
        minted = await new_jwt(stub, task)
        claims = pyjwt.decode(minted.token, options={"verify_signature": False})
        assert claims["exp"] == end and claims["task_id"] == "run-42" and claims["intent"] == "deploy"
        assert claims["jti"] == minted.jti and claims["sub"] == f"{TD}/task-run"
        capped = await new_x509(stub, short, f"{TD}/task-short")
        assert capped.not_valid_after_utc.timestamp() <= created["created_at"] + 60


async def test_no_svid_is_minted_after_the_task_end(server: ServerProc) -> None:
    agent = await attest(server, "join_token", token(server).encode())
    end = int(time.time()) + 8  # room for a slow CLI start on a loaded box; the entry must not be past yet
    task = await asyncio.to_thread(entry, server, f"{TD}/ends-soon", agent.spiffe_id, "--expires-at", str(end))
    async with agent_channel(server, agent) as stub:
        assert (await new_x509(stub, task, f"{TD}/ends-soon")).not_valid_after_utc.timestamp() <= end
        await asyncio.sleep(max(0.0, end - time.time()) + 0.5)
        with pytest.raises(AssertionError, match="entry has expired"):
            await new_x509(stub, task, f"{TD}/ends-soon")
        with pytest.raises(GRPCError) as exc:
            await new_jwt(stub, task)
        assert exc.value.status in (Status.FAILED_PRECONDITION, Status.PERMISSION_DENIED)


async def test_join_token_replay_is_refused_and_audited(server: ServerProc) -> None:
    """Bootstrap keys are exchange-only: a second use of a join token is refused and lands in the audit trail."""
    secret = token(server)
    first = await attest(server, "join_token", secret.encode())
    with pytest.raises(GRPCError) as exc:
        await attest(server, "join_token", secret.encode())
    assert exc.value.status is Status.PERMISSION_DENIED
    assert first.spiffe_id == str(join_token_agent_id(TrustDomain.parse(server.trust_domain), secret))
    assert secret not in first.spiffe_id  # the ID names the token by a hash
    records = (await asyncio.to_thread(server.cli_json, "audit", "show", "--decision", "deny"))["records"]
    denied = [r for r in records if r.get("method") == "AttestAgent"]
    assert len(denied) == 1 and secret not in str(denied[0])  # the token itself never reaches the trail

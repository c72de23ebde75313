"""Revocation on a real spiffe-server (issue 5): CLI, push over SyncAuthorized, CRLs, entry/agent/own revocation."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_py._proto.spiffepy.server.v1 import agent_pb2
from tests.integration.server.agent_client import agent_channel, attest, server_roots
from tests.integration.server.revocation_support import (
    TD,
    entry,
    http_get,
    new_jwt,
    new_x509,
    next_matching,
    revocation_server,
    revoked_values,
    serial_of,
    sync_stream,
    timed_cli,
    token,
)
from tests.support.server_proc import ServerProc


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProc]:
    """One server for the module (each test uses its own agents and entries)."""
    with revocation_server() as server:
        yield server


def _mint_serial(srv: ServerProc, spiffe_id: str) -> tuple[str, x509.Certificate]:
    out = srv.cli_json("x509", "mint", "--spiffe-id", spiffe_id)
    cert = x509.load_pem_x509_certificate(out["svid"].encode())
    return serial_of(cert), cert


def _listed(srv: ServerProc) -> set[tuple[str, str]]:
    return {(r["kind"], r["value"]) for r in srv.cli_json("revocation", "list")["revocations"]}


def test_revoke_svid_by_serial_and_jti_is_listed(srv: ServerProc) -> None:
    serial, _ = _mint_serial(srv, f"{TD}/cli-x509")
    out = srv.cli_json("revoke", "svid", "--serial", serial.upper(), "--reason", "leaked key")
    (rev,) = out["revocations"]
    assert (rev["kind"], rev["value"], rev["reason"]) == ("x509", serial, "leaked key")
    assert rev["spiffe_id"] == f"{TD}/cli-x509" and rev["expires_at"] > rev["revoked_at"]
    jti_token = srv.cli_json("jwt", "mint", "--spiffe-id", f"{TD}/cli-jwt", "--audience", "db")["token"]
    import jwt as pyjwt
    jti = pyjwt.decode(jti_token, options={"verify_signature": False})["jti"]
    srv.cli_json("revoke", "svid", "--jti", jti)
    assert {("x509", serial), ("jwt", jti)} <= _listed(srv)
    # Issue 6: every revocation is in the audit trail, with the admin who asked and what was revoked.
    revokes = [r for r in srv.cli_json("audit", "show")["records"] if r["method"] == "Revoke"]
    assert [(r["spiffe_id"], r["details"]["serials"], r["details"]["jtis"]) for r in revokes] == [
        (f"{TD}/cli-x509", [serial], []), (f"{TD}/cli-jwt", [], [jti])]
    assert all(r["actor"].startswith("uid:") and r["reason"].startswith("revoked") for r in revokes)


@pytest.mark.parametrize(("args", "message"), [
    (("--serial", "abcdef0123"), "NOT_FOUND: revocation: no svid with x509 serial 'abcdef0123' was issued"),
    (("--jti", "never-issued"), "NOT_FOUND: revocation: no svid with jwt jti 'never-issued' was issued"),
    (("--serial", "xyz"), "INVALID_ARGUMENT: revocation: serial must be 1..40 hex digits, got 'xyz'"),
    (("--serial", "00"), "INVALID_ARGUMENT: revocation: serial must not be zero"),
    ((), "revoke svid: give exactly one of --serial and --jti"),
    (("--serial", "ab", "--jti", "x"), "revoke svid: give exactly one of --serial and --jti"),
])
def test_revoke_svid_bad_input_changes_nothing(srv: ServerProc, args: tuple[str, ...], message: str) -> None:
    before = _listed(srv)
    result = srv.cli("revoke", "svid", *args, check=False)
    assert result.returncode == 1 and message in result.stderr and result.stdout == ""
    assert _listed(srv) == before


def test_revoke_unknown_entry_or_agent_changes_nothing(srv: ServerProc) -> None:
    before = _listed(srv)
    result = srv.cli("revoke", "entry", "--entry-id", "no-such-entry", check=False)
    assert result.returncode == 1 and "NOT_FOUND" in result.stderr and "no-such-entry" in result.stderr
    result = srv.cli("revoke", "agent", "--spiffe-id", f"{TD}/spire/agent/join_token/nope", check=False)
    assert result.returncode == 1 and "NOT_FOUND" in result.stderr
    result = srv.cli("revoke", "agent", "--spiffe-id", "spiffe://other.org/x", check=False)
    assert result.returncode == 1 and "INVALID_ARGUMENT: spiffe_id: must belong to trust domain" in result.stderr
    result = srv.cli("revoke", "svid", "--jti", "x", "--reason", "bad\nreason", check=False)
    assert result.returncode == 1 and "INVALID_ARGUMENT" in result.stderr
    assert _listed(srv) == before


async def test_jwt_and_x509_revocations_are_pushed_with_a_signed_crl(srv: ServerProc) -> None:
    """Issue 5 acceptance 1-2 (server side): a revoked jti and serial reach a connected agent's stream."""
    agent = await attest(srv, "join_token", token(srv).encode())
    web = await asyncio.to_thread(entry, srv, f"{TD}/push-web", agent.spiffe_id)
    async with agent_channel(srv, agent) as stub, sync_stream(stub) as (stream, full):
        assert full.HasField("crls")  # the first message always carries the (possibly empty) CRL set
        jwt_svid = await new_jwt(stub, web)
        assert jwt_svid.jti
        started = await timed_cli(srv, "revoke", "svid", "--jti", jwt_svid.jti, "--reason", "test")
        msg = await next_matching(stream, lambda m: ("jwt", jwt_svid.jti) in revoked_values(m))
        print(f"jti revocation reached the stream {time.monotonic() - started:.3f}s after the CLI started")
        (rev,) = [r for r in msg.revocations if r.value == jwt_svid.jti]
        assert (rev.spiffe_id, rev.entry_id, rev.agent_id, rev.reason) == (f"{TD}/push-web", web, agent.spiffe_id,
                                                                            "test")
        leaf = await new_x509(stub, web, f"{TD}/push-web")
        started = await timed_cli(srv, "revoke", "svid", "--serial", serial_of(leaf))
        msg = await next_matching(stream, lambda m: ("x509", serial_of(leaf)) in revoked_values(m))
        print(f"serial revocation reached the stream {time.monotonic() - started:.3f}s after the CLI started")
        assert msg.HasField("crls")
        crls = [x509.load_der_x509_crl(d) for d in msg.crls.crls]
        listing = [c for c in crls if c.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None]
        (crl,) = listing
        roots = x509.load_pem_x509_certificates(server_roots(srv).encode())
        issuer = next(r for r in roots if r.subject == leaf.issuer)
        assert crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
        assert crl.issuer == leaf.issuer


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False, timeout=30)


def test_crl_from_http_endpoint_verifies_with_openssl(srv: ServerProc, tmp_path: Path) -> None:
    """X5 revocation for third-party verifiers: openssl crl -verify and verify -crl_check."""
    serial, revoked = _mint_serial(srv, f"{TD}/openssl-revoked")
    _, good = _mint_serial(srv, f"{TD}/openssl-good")
    srv.cli("revoke", "svid", "--serial", serial)
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(server_roots(srv))
    crl = tmp_path / "crl.pem"
    crl.write_bytes(http_get(srv, "/crl?format=pem"))
    for name, cert in (("revoked.pem", revoked), ("good.pem", good)):
        (tmp_path / name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    checked = _openssl("crl", "-in", str(crl), "-CAfile", str(bundle), "-noout", "-text")
    assert checked.returncode == 0 and "verify OK" in checked.stdout + checked.stderr
    assert f"Serial Number: {serial.upper().zfill(len(serial) + len(serial) % 2)}" in checked.stdout
    bad = _openssl("verify", "-crl_check", "-CAfile", str(bundle), "-CRLfile", str(crl), str(tmp_path / "revoked.pem"))
    assert bad.returncode != 0 and "certificate revoked" in bad.stdout + bad.stderr
    ok = _openssl("verify", "-crl_check", "-CAfile", str(bundle), "-CRLfile", str(crl), str(tmp_path / "good.pem"))
    assert ok.returncode == 0 and ": OK" in ok.stdout
    der = http_get(srv, "/crl")
    assert x509.load_der_x509_crl(der).get_revoked_certificate_by_serial_number(revoked.serial_number) is not None
    assert b'"keys"' in http_get(srv, "/bundle")


async def test_revoke_entry_kills_every_outstanding_svid_and_keeps_or_deletes_the_entry(srv: ServerProc) -> None:
    """Issue 5 acceptance 3: revoke entry."""
    agent = await attest(srv, "join_token", token(srv).encode())
    task = await asyncio.to_thread(entry, srv, f"{TD}/task", agent.spiffe_id)
    other = await asyncio.to_thread(entry, srv, f"{TD}/bystander", agent.spiffe_id)
    async with agent_channel(srv, agent) as stub:
        leaves = [await new_x509(stub, task, f"{TD}/task") for _ in range(2)]
        jwt_svid = await new_jwt(stub, task)
        bystander = await new_x509(stub, other, f"{TD}/bystander")
        out = await asyncio.to_thread(srv.cli_json, "revoke", "entry", "--entry-id", task, "--reason", "run ended")
        got = {(r["kind"], r["value"]) for r in out["revocations"]}
        assert got == {("x509", serial_of(leaves[0])), ("x509", serial_of(leaves[1])), ("jwt", jwt_svid.jti)}
        assert ("x509", serial_of(bystander)) not in await asyncio.to_thread(_listed, srv)
        fresh = await new_x509(stub, task, f"{TD}/task")  # the entry is kept: still-entitled workloads re-issue
        out = await asyncio.to_thread(srv.cli_json, "revoke", "entry", "--entry-id", task, "--delete")
        assert [r["value"] for r in out["revocations"]] == [serial_of(fresh)]
        gone = await asyncio.to_thread(srv.cli, "entry", "show", "--entry-id", task, check=False)
        assert gone.returncode == 1 and "NOT_FOUND" in gone.stderr


async def test_revoke_agent_evicts_it_and_revokes_what_it_holds(srv: ServerProc) -> None:
    """Issue 5 acceptance 3: revoke agent."""
    agent = await attest(srv, "join_token", token(srv).encode())
    web = await asyncio.to_thread(entry, srv, f"{TD}/agent-web", agent.spiffe_id)
    async with agent_channel(srv, agent) as stub, sync_stream(stub) as (stream, _):
        leaf = await new_x509(stub, web, f"{TD}/agent-web")
        jwt_svid = await new_jwt(stub, web)
        out = await asyncio.to_thread(srv.cli_json, "revoke", "agent", "--spiffe-id", agent.spiffe_id)
        assert {(r["kind"], r["value"]) for r in out["revocations"]} == {
            ("x509", serial_of(leaf)), ("jwt", jwt_svid.jti), ("x509", serial_of(agent.chain[0]))}  # its own SVID too
        with pytest.raises(GRPCError) as exc:  # the stream ends: the agent is gone
            while await asyncio.wait_for(stream.recv_message(), 20) is not None:
                pass
            await stream.recv_trailing_metadata()
        assert exc.value.status is Status.PERMISSION_DENIED
        with pytest.raises(GRPCError) as exc:
            await new_x509(stub, web, f"{TD}/agent-web")
        assert exc.value.status is Status.PERMISSION_DENIED
    shown = await asyncio.to_thread(srv.cli, "agent", "show", "--spiffe-id", agent.spiffe_id, check=False)
    assert shown.returncode == 1 and "NOT_FOUND" in shown.stderr


async def test_revoke_own_only_what_was_issued_to_the_caller(srv: ServerProc) -> None:
    """RevokeOwn: an agent may revoke its own SVIDs (process exit), never another agent's."""
    alice = await attest(srv, "join_token", token(srv).encode())
    bob = await attest(srv, "join_token", token(srv).encode())
    web = await asyncio.to_thread(entry, srv, f"{TD}/own-web", alice.spiffe_id)
    async with agent_channel(srv, alice) as alice_stub, agent_channel(srv, bob) as bob_stub:
        leaf = await new_x509(alice_stub, web, f"{TD}/own-web")
        jwt_svid = await new_jwt(alice_stub, web)
        with pytest.raises(GRPCError) as exc:
            await bob_stub.RevokeOwn(agent_pb2.RevokeOwnRequest(x509_serials=[serial_of(leaf)], reason="steal"))
        assert exc.value.status is Status.PERMISSION_DENIED and "was not issued to" in (exc.value.message or "")
        with pytest.raises(GRPCError) as exc:
            await alice_stub.RevokeOwn(agent_pb2.RevokeOwnRequest(reason="nothing"))
        assert exc.value.status is Status.INVALID_ARGUMENT
        assert ("x509", serial_of(leaf)) not in await asyncio.to_thread(_listed, srv)
        resp = await alice_stub.RevokeOwn(agent_pb2.RevokeOwnRequest(
            x509_serials=[serial_of(leaf)], jwt_ids=[jwt_svid.jti], reason="process 4242 exited"))
        assert resp.revoked == 2
    listed = {r["value"]: r for r in (await asyncio.to_thread(srv.cli_json, "revocation", "list"))["revocations"]}
    assert listed[serial_of(leaf)]["reason"] == "process 4242 exited"
    assert listed[jwt_svid.jti]["agent_id"] == alice.spiffe_id

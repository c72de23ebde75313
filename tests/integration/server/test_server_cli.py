"""spiffe-server CLI against a real server process: every command, good and bad inputs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.server_proc import ServerProc

TD = "spiffe://example.org"
PARENT = f"{TD}/spire/agent/join_token/abc"

SERVER_CLI = [sys.executable, "-m", "spiffe_server.cli"]


def _create(srv: ServerProc, spiffe_id: str = f"{TD}/web", *extra: str) -> dict[str, object]:
    return srv.cli_json("entry", "create", "--spiffe-id", spiffe_id, "--parent-id", PARENT,
                        "--selector", "unix:uid:1000", *extra)


def _fails(srv: ServerProc, *args: str) -> str:
    result = srv.cli(*args, check=False)
    assert result.returncode == 1, result.stdout
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_validate_accepts_good_and_names_unknown_key(tmp_path: Path) -> None:
    good = tmp_path / "ok.toml"
    good.write_text('trust_domain = "example.org"\nca_ttl = "60s"\n')
    ok = subprocess.run(check=False, args=[*SERVER_CLI, "validate", "--config", str(good)],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "configuration is valid" in ok.stdout
    assert "default_x509_svid_ttl" in ok.stderr  # warns: SVID TTL > ca_ttl/6
    bad = tmp_path / "bad.toml"
    bad.write_text('trust_domain = "example.org"\n[health]\nbind_prot = 1\n')
    res = subprocess.run(check=False, args=[*SERVER_CLI, "validate", "--config", str(bad)],
                         capture_output=True, text=True)
    assert res.returncode == 1
    assert res.stderr.strip() == "error: config: unknown key 'health.bind_prot'"


def test_run_without_trust_domain_fails(tmp_path: Path) -> None:
    res = subprocess.run(check=False, args=[*SERVER_CLI, "run", "--data-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    assert "config: trust_domain: required" in res.stderr


def test_healthcheck_and_socket_permissions(server: ServerProc) -> None:
    out = server.cli_json("healthcheck")
    assert out == {"live": True, "ready": True, "checks": {"datastore": "ok", "ca": "ok"}}
    assert stat.S_IMODE(server.socket_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700


def test_healthcheck_without_server_fails(tmp_path: Path) -> None:
    srv = ServerProc(tmp_path / "d", trust_domain="example.org", port=1, extra_args=(), config_text=None,
                     owns_dir=False)
    line = _fails(srv, "healthcheck")
    assert line.startswith("error: cannot reach the server admin socket")


def test_entry_lifecycle(server: ServerProc) -> None:
    created = _create(server, f"{TD}/web", "--dns-name", "web.example.org", "--x509-svid-ttl", "600",
                      "--hint", "web", "--admin", "--label", "team=a", "--jwt-claim", "tier=gold")
    eid = str(created["id"])
    assert eid and created["spiffe_id"] == f"{TD}/web" and created["selectors"] == ["unix:uid:1000"]
    assert created["dns_names"] == ["web.example.org"] and created["x509_svid_ttl"] == 600
    assert created["admin"] is True and created["labels"] == {"team": "a"} and created["jwt_claims"] == {"tier": "gold"}
    _create(server, f"{TD}/db")
    assert server.cli_json("entry", "count") == {"count": 2}
    shown = server.cli_json("entry", "show", "--entry-id", eid)
    assert [e["id"] for e in shown["entries"]] == [eid]
    by_id = server.cli_json("entry", "show", "--spiffe-id", f"{TD}/db")
    assert [e["spiffe_id"] for e in by_id["entries"]] == [f"{TD}/db"]
    by_parent = server.cli_json("entry", "show", "--parent-id", PARENT)
    assert len(by_parent["entries"]) == 2
    updated = server.cli_json("entry", "update", "--entry-id", eid, "--spiffe-id", f"{TD}/web2", "--parent-id",
                              PARENT, "--selector", "unix:uid:1001")
    assert updated["spiffe_id"] == f"{TD}/web2" and updated["revision"] > created["revision"]
    server.cli("entry", "delete", "--entry-id", eid)
    assert _fails(server, "entry", "show", "--entry-id", eid).startswith("error: NOT_FOUND:")
    assert server.cli_json("entry", "count") == {"count": 1}
    pretty = server.cli("entry", "show").stdout
    assert "Found 1 entry" in pretty and f"{TD}/db" in pretty


@pytest.mark.parametrize(("args", "expected"), [
    (["--spiffe-id", "spiffe://example.org/a/../b"], "error: INVALID_ARGUMENT: entry.spiffe_id: spiffeid:"),
    (["--spiffe-id", "spiffe://other.org/x"], "error: INVALID_ARGUMENT: entry.spiffe_id: must belong to trust domain"),
    (["--spiffe-id", f"{TD}/x", "--x509-svid-ttl", "-5"], "error: INVALID_ARGUMENT: entry.x509_svid_ttl: must not be"),
    (["--spiffe-id", f"{TD}/x", "--jwt-svid-ttl", "-1"], "error: INVALID_ARGUMENT: entry.jwt_svid_ttl: must not be"),
    (["--spiffe-id", f"{TD}/x", "--federates-with", "Bad TD"], "error: INVALID_ARGUMENT: entry.federates_with:"),
    (["--spiffe-id", f"{TD}/x", "--label", "novalue"], "error: --label: must be key=value"),
])
def test_entry_create_rejects_bad_input(server: ServerProc, args: list[str], expected: str) -> None:
    line = _fails(server, "entry", "create", "--parent-id", PARENT, "--selector", "unix:uid:1", *args)
    assert line.startswith(expected), line
    assert server.cli_json("entry", "count") == {"count": 0}


def test_entry_selector_and_parent_errors(server: ServerProc) -> None:
    line = _fails(server, "entry", "create", "--spiffe-id", f"{TD}/x", "--parent-id", PARENT, "--selector", "unix")
    assert line == "error: --selector: must be of the form type:value, got 'unix'"
    line = _fails(server, "entry", "create", "--spiffe-id", f"{TD}/x", "--parent-id", PARENT)
    assert line == "error: INVALID_ARGUMENT: entry.selectors: at least one selector is required"
    line = _fails(server, "entry", "create", "--spiffe-id", f"{TD}/x", "--selector", "unix:uid:1")
    assert line == "error: INVALID_ARGUMENT: entry.parent_id: required"


def test_entry_duplicate_and_unknown(server: ServerProc) -> None:
    _create(server)
    assert _fails(server, "entry", "create", "--spiffe-id", f"{TD}/web", "--parent-id", PARENT,
                  "--selector", "unix:uid:1000").startswith("error: ALREADY_EXISTS:")
    assert _fails(server, "entry", "delete", "--entry-id", "nope").startswith("error: NOT_FOUND:")
    assert _fails(server, "entry", "update", "--entry-id", "nope", "--spiffe-id", f"{TD}/a", "--parent-id", PARENT,
                  "--selector", "unix:uid:1").startswith("error: NOT_FOUND:")


def test_token_generate(server: ServerProc) -> None:
    now = datetime.now(UTC).timestamp()
    token = server.cli_json("token", "generate", "--ttl", "120")
    assert set(token) == {"value", "expires_at", "agent_id"} and len(token["value"]) >= 32
    assert now + 100 < token["expires_at"] <= now + 125
    aliased = server.cli_json("token", "generate", "--spiffe-id", f"{TD}/node/a")
    entries = server.cli_json("entry", "show", "--spiffe-id", f"{TD}/node/a")["entries"]
    assert [e["parent_id"] for e in entries] == [aliased["agent_id"]]
    assert _fails(server, "token", "generate", "--ttl", "-1").startswith("error: INVALID_ARGUMENT: ttl:")
    assert _fails(server, "token", "generate", "--spiffe-id", "spiffe://x.org/a").startswith(
        "error: INVALID_ARGUMENT: spiffe_id: must belong")


def test_agent_commands_on_empty_and_unknown(server: ServerProc) -> None:
    assert server.cli_json("agent", "list") == {"agents": []}
    assert server.cli_json("agent", "count") == {"count": 0}
    for cmd in ("show", "ban", "evict"):
        line = _fails(server, "agent", cmd, "--spiffe-id", f"{TD}/spire/agent/join_token/none")
        assert line.startswith("error: NOT_FOUND:"), line
    assert _fails(server, "agent", "show", "--spiffe-id", "not-an-id").startswith(
        "error: INVALID_ARGUMENT: spiffe_id: spiffeid:")


def test_x509_mint_verifies_with_openssl_and_py_spiffe(server: ServerProc, tmp_path: Path) -> None:
    out = tmp_path / "mint"
    res = server.cli_json("x509", "mint", "--spiffe-id", f"{TD}/minted", "--ttl", "300", "--dns-name",
                          "m.example.org", "--write", str(out))
    assert res["svid"] == str(out / "svid.pem")
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
    (tmp_path / "roots.pem").write_text(server.cli("bundle", "show", "--format", "pem").stdout)
    for ca_file in (out / "bundle.pem", tmp_path / "roots.pem"):
        v = subprocess.run(check=False, args=["openssl", "verify", "-CAfile", str(ca_file), str(out / "svid.pem")],
                           capture_output=True, text=True)
        assert v.returncode == 0 and v.stdout.strip().endswith(": OK"), v.stderr
    leaf = x509.load_pem_x509_certificate((out / "svid.pem").read_bytes())
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier) == [f"{TD}/minted"]
    assert 295 <= (leaf.not_valid_after_utc - datetime.now(UTC)).total_seconds() <= 305
    from spiffe.svid.x509_svid import X509Svid as PySpiffeSvid
    svid = PySpiffeSvid.parse((out / "svid.pem").read_bytes(), (out / "key.pem").read_bytes())
    assert str(svid.spiffe_id) == f"{TD}/minted"


def test_x509_mint_bad_inputs_write_nothing(server: ServerProc, tmp_path: Path) -> None:
    out = tmp_path / "nothing"
    assert _fails(server, "x509", "mint", "--spiffe-id", "spiffe://other.org/x", "--write", str(out)).startswith(
        "error: INVALID_ARGUMENT: csr.spiffe_id: must belong")
    assert _fails(server, "x509", "mint", "--spiffe-id", f"{TD}/x", "--ttl", "-3", "--write", str(out)).startswith(
        "error: INVALID_ARGUMENT: ttl: must not be negative")
    assert not out.exists()


def test_jwt_mint_verifies_with_pyjwt(server: ServerProc) -> None:
    token = server.cli_json("jwt", "mint", "--spiffe-id", f"{TD}/jwt", "--audience", "db", "--ttl", "120")["token"]
    jwks = json.loads(server.cli("bundle", "show", "--format", "spiffe").stdout)
    kid = jwt.get_unverified_header(token)["kid"]
    (jwk,) = [k for k in jwks["keys"] if k.get("kid") == kid and k["use"] == "jwt-svid"]
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["ES256"], audience="db")
    assert claims["sub"] == f"{TD}/jwt"
    assert claims["exp"] - claims["iat"] <= 125
    assert _fails(server, "jwt", "mint", "--spiffe-id", "bad", "--audience", "x").startswith(
        "error: INVALID_ARGUMENT: spiffe_id:")


def _foreign_ca_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "other")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_bundle_set_list_delete(server: ServerProc, tmp_path: Path) -> None:
    pem = tmp_path / "other.pem"
    pem.write_bytes(_foreign_ca_pem())
    server.cli("bundle", "set", "--id", "other.org", "--path", str(pem))
    listed = server.cli_json("bundle", "list")["bundles"]
    assert [b["trust_domain"] for b in listed] == ["other.org"]
    assert listed[0]["pem"].strip() == pem.read_text().strip()
    spiffe_form = server.cli_json("bundle", "list", "--format", "spiffe")["bundles"][0]["spiffe"]
    assert json.loads(spiffe_form)["keys"][0]["use"] == "x509-svid"
    assert _fails(server, "bundle", "set", "--id", "example.org", "--path", str(pem)).startswith(
        "error: INVALID_ARGUMENT: bundle.trust_domain: must not be the server's own")
    (tmp_path / "junk.pem").write_text("not pem")
    assert _fails(server, "bundle", "set", "--id", "x.org", "--path", str(tmp_path / "junk.pem")).startswith(
        "error: INVALID_ARGUMENT: bundle: must hold at least one authority")
    server.cli("bundle", "set", "--id", "third.org", "--format", "spiffe", "--path", "-",
               stdin=spiffe_form.encode())  # a SPIFFE bundle from stdin
    third = server.cli_json("bundle", "list")["bundles"]
    assert [b["trust_domain"] for b in third] == ["other.org", "third.org"] and third[1]["pem"] == third[0]["pem"]
    for td in ("other.org", "third.org"):
        server.cli("bundle", "delete", "--id", td)
    assert server.cli_json("bundle", "list") == {"bundles": []}
    assert _fails(server, "bundle", "delete", "--id", "other.org").startswith("error: NOT_FOUND:")


def test_restart_keeps_state(server: ServerProc) -> None:
    entry = _create(server)
    token = server.cli_json("token", "generate")["value"]
    roots_before = server.cli("bundle", "show", "--format", "pem").stdout
    server.restart()
    assert server.cli("bundle", "show", "--format", "pem").stdout == roots_before  # same CA root
    assert server.cli_json("entry", "show", "--entry-id", str(entry["id"]))["entries"][0]["spiffe_id"] == f"{TD}/web"
    from tests.integration.server.agent_client import attest_join_token
    agent = attest_join_token(server, token)   # the token survived the restart
    server.restart()
    assert [a["spiffe_id"] for a in server.cli_json("agent", "list")["agents"]] == [agent.spiffe_id]


@contextlib.contextmanager
def _traversable(*paths: Path) -> Iterator[None]:
    """Add o+x to every ancestor of ``paths`` that lacks it; restore the modes on exit."""
    changed: dict[Path, int] = {}
    for path in paths:
        for directory in (path, *path.parents):
            mode = directory.stat().st_mode
            if directory not in changed and not mode & stat.S_IXOTH:
                changed[directory] = stat.S_IMODE(mode)
                os.chmod(directory, stat.S_IMODE(mode) | stat.S_IXOTH)
    try:
        yield
    finally:
        for directory, mode in changed.items():
            os.chmod(directory, mode)


def test_non_admin_uid_is_refused(server: ServerProc) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to call the admin socket as another uid")
    os.chmod(server.socket_path, 0o666)
    for directory in (server.data_dir, server.data_dir.parent):
        os.chmod(directory, 0o755)
    # uid 65534 must reach the interpreter, the venv and the source tree: a clone in a 0700
    # directory (mktemp -d) is let through (o+x) for the call only.
    with _traversable(Path(sys.base_prefix), Path(sys.prefix), Path(__file__).resolve().parents[3]):
        res = subprocess.run(check=False, args=["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                                sys.executable, "-m", "spiffe_server.cli", "entry", "count",
                                                "--socket-path", str(server.socket_path)],
                             capture_output=True, text=True, timeout=60, cwd="/")
    assert res.returncode == 1, res.stderr
    assert res.stderr.strip() == "error: PERMISSION_DENIED: admin: uid 65534 is not an admin"


def test_logs_hold_no_keys_or_tokens(server: ServerProc, tmp_path: Path) -> None:
    """A full run's logs contain no PEM block, no JWT and no join token."""
    token = server.cli_json("token", "generate")["value"]
    server.cli("x509", "mint", "--spiffe-id", f"{TD}/m", "--write", str(tmp_path / "m"))
    jwt_token = server.cli_json("jwt", "mint", "--spiffe-id", f"{TD}/j", "--audience", "a")["token"]
    from tests.integration.server.agent_client import attest_join_token
    attest_join_token(server, token)
    assert server.stop() == 0  # SIGTERM: graceful shutdown
    text = server.log_text()
    assert "server stopped" in text
    assert "server started" in text and "agent attested" in text
    assert "-----BEGIN" not in text
    assert token not in text and jwt_token not in text
    import re
    assert not re.search(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.", text)


async def test_list_entries_pages_and_bounds_page_size(server: ServerProc) -> None:
    from grpclib.client import Channel
    from grpclib.const import Status
    from grpclib.exceptions import GRPCError

    from spiffe_py._proto.spiffepy.server.v1 import admin_pb2
    from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub
    for name in ("a", "b", "c"):
        await asyncio.to_thread(_create, server, f"{TD}/{name}")
    channel = Channel(path=str(server.socket_path))
    try:
        api = AdminAPIStub(channel)
        page = await api.ListEntries(admin_pb2.ListEntriesRequest(page_size=2))
        assert len(page.entries) == 2 and page.next_page_token
        rest = await api.ListEntries(admin_pb2.ListEntriesRequest(page_size=2, page_token=page.next_page_token))
        assert len(rest.entries) == 1 and not rest.next_page_token
        with pytest.raises(GRPCError) as exc:
            await api.ListEntries(admin_pb2.ListEntriesRequest(page_size=1001))
        assert exc.value.status is Status.INVALID_ARGUMENT
        assert exc.value.message == "page_size: must be within 0..1000, got 1001"
    finally:
        channel.close()
    assert len(server.cli_json("entry", "show")["entries"]) == 3


def test_json_log_format() -> None:
    with ServerProc.start(extra_args=["--log-format", "json", "--log-level", "debug"]) as srv:
        srv.cli("entry", "create", "--spiffe-id", f"{TD}/j", "--parent-id", PARENT, "--selector", "unix:uid:1")
        srv.stop()
        records = [json.loads(line) for line in srv.log_text().splitlines() if line.strip()]
    assert {"time", "level", "logger", "msg"} <= set(records[0])
    created = [r for r in records if r["msg"] == "entry created"]
    assert created and created[0]["spiffe_id"] == f"{TD}/j" and created[0]["level"] == "info"


async def test_mint_x509_rejects_bad_csrs(server: ServerProc) -> None:
    from grpclib.client import Channel
    from grpclib.const import Status
    from grpclib.exceptions import GRPCError

    from spiffe_py._proto.spiffepy.server.v1 import admin_pb2
    from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub
    from tests.integration.server.agent_client import csr_for
    key = ec.generate_private_key(ec.SECP256R1())
    good = csr_for(key, f"{TD}/x")
    tampered = good[:-2] + bytes([good[-2] ^ 0xFF]) + good[-1:]   # signature no longer matches the key
    cases = [
        (b"", "csr: required"),
        (b"junk", "ca: malformed csr"),
        (csr_for(key), "csr: must hold exactly one spiffe id uri san"),
        (tampered, "ca: csr signature is invalid"),
        (csr_for(key, f"{TD}/spire/server"), "csr.spiffe_id: is reserved for the server and agents"),
    ]
    channel = Channel(path=str(server.socket_path))
    try:
        api = AdminAPIStub(channel)
        for csr, message in cases:
            with pytest.raises(GRPCError) as exc:
                await api.MintX509SVID(admin_pb2.MintX509SVIDRequest(csr=csr))
            assert exc.value.status is Status.INVALID_ARGUMENT
            assert exc.value.message.startswith(message), exc.value.message
    finally:
        channel.close()

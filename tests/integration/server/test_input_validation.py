"""Hostile and edge-case inputs through a real spiffe-server and its CLI: each gets a precise error.

None of them may end in INTERNAL, a traceback, a raw escape sequence on the operator's
terminal, or one bad entry blocking another entry's SVIDs.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status

from spiffe_py._proto.spiffepy.server.v1 import agent_pb2
from spiffe_py.selectors import Selector
from spiffe_server.datastore import RegistrationEntry, open_datastore
from tests.integration.server.agent_client import agent_channel, attest, csr_for
from tests.support.server_proc import ServerProc

TD = "spiffe://example.org"
PARENT = f"{TD}/spire/agent/join_token/abc"
ESC = "\x1b"
NOBODY = 65534


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProc]:
    """One server for the many refused-input cases (none of them changes state)."""
    with ServerProc.start() as s:
        yield s


def _fails(srv: ServerProc, *args: str) -> str:
    """Run a CLI command that must fail with exit 1 and exactly one stderr line; return that line."""
    result = srv.cli(*args, check=False)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _create(spiffe_id: str, *extra: str, parent: str = PARENT) -> list[str]:
    return ["entry", "create", "--spiffe-id", spiffe_id, "--parent-id", parent, "--selector", "unix:uid:1000",
            *extra]


def _count(srv: ServerProc) -> int:
    return int(srv.cli_json("entry", "count")["count"])


# -- DNS names -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "reason"), [
    ("bad name", "label 'bad name' of 'bad name' must hold only letters, digits and inner hyphens"),
    ("bücher.example", "'bücher.example' is not ASCII; use the IDNA A-label (punycode) form 'xn--bcher-kva.example'"),
    ("a..example.org", "'a..example.org' has an empty label"),
    ("web.*.example.org", "a wildcard is allowed only as the whole left-most label"),
    ("w*.example.org", "a wildcard is allowed only as the whole left-most label"),
    ("*", "a wildcard must be followed by a domain"),
    ("-web.example.org", "must hold only letters, digits and inner hyphens"),
    ("web_1.example.org", "must hold only letters, digits and inner hyphens"),
    ("a" * 64 + ".org", "is 64 characters, at most 63 allowed"),
    (("a" * 60 + ".") * 4 + "abcdefghijklm", "is 257 characters, at most 253 allowed"),
    ("example.org.", "must not end with a dot"),
    ("xn--55.example", "label 'xn--55' of 'xn--55.example' is not a valid IDNA A-label"),
])
def test_entry_create_refuses_invalid_dns_name(srv: ServerProc, name: str, reason: str) -> None:
    """A name that cannot be a DNS SAN is refused at create, naming the field and why."""
    before = _count(srv)
    line = _fails(srv, *_create(f"{TD}/dns", "--dns-name", "ok.example.org", f"--dns-name={name}"))
    assert line.startswith("error: INVALID_ARGUMENT: entry.dns_names: "), line
    assert reason in line, line
    assert _count(srv) == before


def test_entry_update_refuses_invalid_dns_name_and_accepts_valid_ones(srv: ServerProc) -> None:
    good = ("*.example.org", "xn--bcher-kva.example", "web-1.example.org", "a" * 63 + ".org")
    flags = [arg for name in good for arg in ("--dns-name", name)]
    created = json.loads(srv.cli(*_create(f"{TD}/dns-ok", *flags), "--output", "json").stdout)
    assert created["dns_names"] == list(good)
    line = _fails(srv, "entry", "update", "--entry-id", created["id"], "--spiffe-id", f"{TD}/dns-ok",
                  "--parent-id", PARENT, "--selector", "unix:uid:1000", "--dns-name", "bücher.example")
    assert line.startswith("error: INVALID_ARGUMENT: entry.dns_names: 'bücher.example' is not ASCII"), line
    shown = srv.cli_json("entry", "show", "--entry-id", created["id"])["entries"][0]
    assert shown["dns_names"] == list(good) and shown["revision"] == created["revision"]
    srv.cli("entry", "delete", "--entry-id", created["id"])


def test_x509_mint_refuses_invalid_dns_name(srv: ServerProc, tmp_path: Path) -> None:
    """A non-ASCII --dns-name used to crash the CLI with a traceback while it built the CSR."""
    line = _fails(srv, "x509", "mint", "--spiffe-id", f"{TD}/m", "--dns-name", "bücher.example",
                  "--write", str(tmp_path / "out"))
    assert line == ("error: --dns-name: 'bücher.example' is not ASCII; "
                    "use the IDNA A-label (punycode) form 'xn--bcher-kva.example'")
    line = _fails(srv, "x509", "mint", "--spiffe-id", f"{TD}/m", "--dns-name", "bad name")
    assert line == "error: --dns-name: label 'bad name' of 'bad name' must hold only letters, digits and inner hyphens"
    assert not (tmp_path / "out").exists()


async def test_bad_stored_dns_name_fails_only_its_own_batch_item(server: ServerProc) -> None:
    """A row stored before validation existed (written here straight into the datastore) fails alone.

    The non-ASCII name used to raise ValueError while signing, which failed the whole batch
    with INTERNAL, so the agent's other entries got no SVIDs either.
    """
    token = str(server.cli_json("token", "generate")["value"])
    agent = await attest(server, "join_token", token.encode())
    good = str(json.loads(server.cli(*_create(f"{TD}/good", "--dns-name", "good.example.org",
                                              parent=agent.spiffe_id), "--output", "json").stdout)["id"])
    store = open_datastore(server.data_dir / "datastore.sqlite3")
    try:
        created = datetime(2026, 1, 1, tzinfo=UTC)
        bad = [store.create_entry(RegistrationEntry(
            spiffe_id=f"{TD}/legacy/{i}", parent_id=agent.spiffe_id, selectors=(Selector("unix", "uid:1001"),),
            created_at=created, dns_names=(name,))).id for i, name in enumerate(("bücher.example", "bad name"))]
    finally:
        store.close()
    key = ec.generate_private_key(ec.SECP256R1())
    items = [agent_pb2.NewX509SVIDParams(entry_id=eid, csr=csr_for(key)) for eid in (bad[0], good, bad[1])]
    async with agent_channel(server, agent) as stub:
        response = await stub.BatchNewX509SVID(agent_pb2.BatchNewX509SVIDRequest(params=items))
    by_id = {r.entry_id: r for r in response.results}
    assert Status(by_id[good].status_code) is Status.OK
    leaf = x509.load_der_x509_certificate(by_id[good].cert_chain[0])
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["good.example.org"]
    for eid in bad:
        assert Status(by_id[eid].status_code) is Status.FAILED_PRECONDITION, by_id[eid]
        assert by_id[eid].status_message.startswith(f"agent: entry {eid!r} cannot be signed: entry.dns_names: ")
        assert not by_id[eid].cert_chain
    assert "Traceback" not in server.log_text()


# -- hints ---------------------------------------------------------------------------------------------

def test_hint_over_1024_bytes_is_refused_at_create_and_update(srv: ServerProc) -> None:
    """WA-30: a hint the Workload API may not carry is refused where the operator sets it."""
    line = _fails(srv, *_create(f"{TD}/hint", "--hint", "h" * 1025))
    assert line == "error: INVALID_ARGUMENT: entry.hint: must be at most 1024 bytes, got 1025"
    line = _fails(srv, *_create(f"{TD}/hint", "--hint", "é" * 513))  # 513 characters, 1026 bytes
    assert line == "error: INVALID_ARGUMENT: entry.hint: must be at most 1024 bytes, got 1026"
    created = json.loads(srv.cli(*_create(f"{TD}/hint", "--hint", "h" * 1024), "--output", "json").stdout)
    assert created["hint"] == "h" * 1024
    line = _fails(srv, "entry", "update", "--entry-id", created["id"], "--spiffe-id", f"{TD}/hint",
                  "--parent-id", PARENT, "--selector", "unix:uid:1000", "--hint", "h" * 1025)
    assert line == "error: INVALID_ARGUMENT: entry.hint: must be at most 1024 bytes, got 1025"
    srv.cli("entry", "delete", "--entry-id", created["id"])


@pytest.mark.parametrize("hint", [f"web{ESC}[2J{ESC}[31mred", "two\nlines", "bell\x07", "c1\x9b31m"])
def test_hint_with_control_characters_is_refused(srv: ServerProc, hint: str) -> None:
    line = _fails(srv, *_create(f"{TD}/ansi", "--hint", hint))
    assert line == "error: INVALID_ARGUMENT: entry.hint: must not contain control characters"


def test_cli_escapes_control_characters_it_echoes(srv: ServerProc) -> None:
    """Operator strings the API keeps (labels here) reach the terminal escaped, never as raw escapes."""
    created = json.loads(srv.cli(*_create(f"{TD}/label", "--label", f"note=x{ESC}[2J{ESC}]0;pwned\x07"),
                                 "--output", "json").stdout)
    try:
        pretty = srv.cli("entry", "show", "--entry-id", created["id"]).stdout
        assert ESC not in pretty and "\x07" not in pretty
        assert "Labels        : note=x\\x1b[2J\\x1b]0;pwned\\x07" in pretty
        raw = srv.cli("entry", "show", "--entry-id", created["id"], "--output", "json").stdout
        assert ESC not in raw and json.loads(raw)["entries"][0]["labels"]["note"] == f"x{ESC}[2J{ESC}]0;pwned\x07"
        err = srv.cli("entry", "show", "--entry-id", f"no{ESC}[2Jsuch", check=False)
        assert err.returncode == 1 and ESC not in err.stderr
    finally:
        srv.cli("entry", "delete", "--entry-id", created["id"])


# -- numbers -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["token", "generate", "--ttl", "4294967296"],
    ["x509", "mint", "--spiffe-id", f"{TD}/m", "--ttl", "2147483648"],
    ["jwt", "mint", "--spiffe-id", f"{TD}/m", "--audience", "a", "--ttl", "99999999999"],
    _create(f"{TD}/ttl", "--x509-svid-ttl", "2147483648"),
    _create(f"{TD}/ttl", "--jwt-svid-ttl", "2147483648"),
    _create(f"{TD}/ttl", "--max-lifetime", "2147483648"),
])
def test_cli_refuses_ttl_above_int32_as_a_usage_error(srv: ServerProc, args: list[str]) -> None:
    """A TTL of 2^31 or more used to crash the CLI with a protobuf ValueError traceback."""
    result = srv.cli(*args, check=False)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    flag = next(a for a in args if a.startswith("--") and a.endswith(("ttl", "lifetime")))
    assert f"error: argument {flag}: must be at most 2147483647 seconds, got " in result.stderr


def test_expires_at_beyond_year_9999_is_invalid_argument(srv: ServerProc) -> None:
    line = _fails(srv, *_create(f"{TD}/far", "--expires-at", "999999999999999"))
    assert line == ("error: INVALID_ARGUMENT: entry.expires_at: must be Unix seconds within 0..253402300799, "
                    "got 999999999999999")
    line = _fails(srv, "audit", "show", "--since", "999999999999999")
    assert line == "error: INVALID_ARGUMENT: since: must be Unix seconds within 0..253402300799, got 999999999999999"
    result = srv.cli(*_create(f"{TD}/far", "--expires-at", "99999999999999999999"), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "argument --expires-at: must be at most 9223372036854775807" in result.stderr
    assert "Traceback" not in srv.log_text()


def test_oversized_audience_is_invalid_argument(srv: ServerProc) -> None:
    line = _fails(srv, "jwt", "mint", "--spiffe-id", f"{TD}/aud", "--audience", "a" * 100_000)
    assert line == "error: INVALID_ARGUMENT: audience: at most 32 non-empty values of <= 256 characters"
    many = [arg for i in range(33) for arg in ("--audience", f"a{i}")]
    line = _fails(srv, "jwt", "mint", "--spiffe-id", f"{TD}/aud", *many)
    assert line == "error: INVALID_ARGUMENT: audience: at most 32 non-empty values of <= 256 characters"


# -- join tokens ---------------------------------------------------------------------------------------

def test_unused_join_token_is_not_shown_by_entry_show(srv: ServerProc) -> None:
    """The alias entry's parent ID names the token by a hash: `entry show` does not hand out a usable token."""
    token = srv.cli_json("token", "generate", "--spiffe-id", f"{TD}/node/n1")
    assert token["value"] not in token["agent_id"]
    assert token["agent_id"].startswith(f"{TD}/spire/agent/join_token/")
    shown = srv.cli("entry", "show", "--spiffe-id", f"{TD}/node/n1", "--output", "json").stdout
    assert token["value"] not in shown
    assert [e["parent_id"] for e in json.loads(shown)["entries"]] == [token["agent_id"]]
    assert token["value"] not in srv.cli("entry", "show").stdout
    pretty = srv.cli("token", "generate").stdout.splitlines()
    assert pretty[0].startswith("Token      : ")
    assert pretty[1].startswith(f"Agent ID   : {TD}/spire/agent/join_token/")
    assert pretty[0].removeprefix("Token      : ") not in pretty[1]


async def test_join_token_agent_gets_the_advertised_id_and_its_alias(server: ServerProc) -> None:
    """Attestation with a token yields exactly the agent ID `token generate` printed; the alias is its."""
    token = server.cli_json("token", "generate", "--spiffe-id", f"{TD}/node/n2")
    agent = await attest(server, "join_token", str(token["value"]).encode())
    assert agent.spiffe_id == token["agent_id"]
    assert [a["spiffe_id"] for a in server.cli_json("agent", "list")["agents"]] == [token["agent_id"]]
    assert token["value"] not in server.cli("agent", "list").stdout


# -- --write -------------------------------------------------------------------------------------------

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


def test_write_into_unwritable_directory_reports_permission_denied(tmp_path: Path) -> None:
    """As `nobody`, `--write` into a root-owned 0755 directory says permission denied, not "cannot reach"."""
    if os.getuid() != 0:
        pytest.skip("needs root to run the CLI as uid 65534")
    with ServerProc.start(config_text=f"admin_uids = [{NOBODY}]\n") as srv:
        os.chmod(srv.socket_path, 0o666)
        for directory in (srv.data_dir, srv.data_dir.parent):
            os.chmod(directory, 0o755)
        locked = tmp_path / "locked"
        locked.mkdir()
        os.chmod(locked, 0o755)
        cases = [(["jwt", "mint", "--spiffe-id", f"{TD}/w", "--audience", "a"], locked / "token"),
                 (["x509", "mint", "--spiffe-id", f"{TD}/w"], locked / "sub" / "svid")]
        with _traversable(Path(sys.base_prefix), Path(sys.prefix), Path(__file__).resolve().parents[3], locked):
            for args, target in cases:
                res = subprocess.run(check=False, args=[
                    "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable, "-m",
                    "spiffe_server.cli", *args, "--write", str(target), "--socket-path", str(srv.socket_path)],
                    capture_output=True, text=True, timeout=60, cwd="/")
                assert res.returncode == 1, res.stderr
                assert res.stderr.strip() == f"error: --write: cannot write {str(target)!r}: Permission denied"
        assert list(locked.iterdir()) == [] and stat.S_IMODE(locked.stat().st_mode) == 0o755

"""The console over HTTPS: admin SVIDs log in with mTLS; other SVIDs and anonymous callers are refused.

A real spiffe-server serves the console with a web-PKI certificate; SVIDs come from its own
``x509 mint``. No browser: an HTTPS client with the SVID as its client certificate.
"""

from __future__ import annotations

import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, types_pb2
from tests.integration.console.admin_calls import admin_call
from tests.support.server_proc import ServerProc, free_port
from tests.support.web_pki import WebPki

pytestmark = pytest.mark.slow

TD = "example.org"
ADMIN_ID = f"spiffe://{TD}/ops/alice"
READER_ID = f"spiffe://{TD}/ops/auditor"
PLAIN_ID = f"spiffe://{TD}/web"
PARENT = f"spiffe://{TD}/spire/agent/join_token/x"


class Console:
    def __init__(self, server: ServerProc, port: int, pki: WebPki, certs: Path) -> None:
        self.server, self.port, self.pki, self.certs = server, port, pki, certs

    def context(self, who: str | None) -> ssl.SSLContext:
        ctx = self.pki.client_context()
        if who is not None:
            ctx.load_cert_chain(self.certs / who / "svid.pem", self.certs / who / "key.pem")
        return ctx

    def request(self, who: str | None, path: str, form: dict[str, str] | None = None) -> tuple[int, str]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(f"https://127.0.0.1:{self.port}{path}", data=data)
        try:
            with urllib.request.urlopen(req, context=self.context(who), timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    work = tmp_path_factory.mktemp("console-mtls")
    pki = WebPki.create()
    pki.write_serving(work / "console.crt", work / "console.key", dns_names=["localhost"])
    port = free_port()
    config = (f'signing_workers = 0\n[console]\nbind_port = {port}\n'
              f'cert_file = "{work / "console.crt"}"\nkey_file = "{work / "console.key"}"\n')
    with ServerProc.start(trust_domain=TD, config_text=config) as server:
        entries = [types_pb2.Entry(spiffe_id=sid, parent_id=PARENT, admin=admin, labels=labels,
                                   selectors=[types_pb2.Selector(type="unix", value="uid:7")])
                   for sid, admin, labels in ((ADMIN_ID, True, {}), (READER_ID, True, {"admin_readonly": "true"}),
                                              (PLAIN_ID, False, {}))]
        reply = admin_call(server, "BatchCreateEntry", admin_pb2.BatchCreateEntryRequest(entries=entries))
        assert [r.status.code for r in reply.results] == [0, 0, 0]
        for sid in (ADMIN_ID, READER_ID, PLAIN_ID):
            out = work / sid.rsplit("/", 1)[1]
            out.mkdir()
            server.cli("x509", "mint", "--spiffe-id", sid, "--write", str(out))
        assert "https://127.0.0.1" in server.log_text() and "/login?token=" in server.log_text()
        yield Console(server, port, pki, work)


def _csrf(page: str) -> str:
    match = re.search(r'"X-CSRF-Token": "([^"]+)"', page)
    assert match, page[:500]
    return match.group(1)


def _audit(server: ServerProc) -> list[dict[str, Any]]:
    reply = admin_call(server, "ListAudit", admin_pb2.ListAuditRequest(page_size=1000))
    return [json.loads(r) for r in reply.records]


def test_an_admin_svid_logs_in_with_mtls_and_changes_through_the_admin_api(console: Console) -> None:
    status, page = console.request("alice", "/entries")
    assert status == 200 and "Create entry" in page and ADMIN_ID in page
    form = {"spiffe_id": f"spiffe://{TD}/created-over-mtls", "parent_id": PARENT, "selectors": "unix:uid:9"}
    status, body = console.request("alice", "/entries", form)  # no CSRF token: refused
    assert status == 403 and "CSRF" in body
    status, body = console.request("alice", "/entries", {**form, "csrf": _csrf(page)})
    assert status == 200 and "entry created" in body
    created = [r for r in _audit(console.server) if r.get("method") == "CreateEntry"
               and r.get("spiffe_id") == f"spiffe://{TD}/created-over-mtls"]
    assert [r["actor"] for r in created] == [ADMIN_ID]


def test_an_admin_svid_labelled_read_only_cannot_change(console: Console) -> None:
    status, page = console.request("auditor", "/entries")
    assert status == 200
    form = {"spiffe_id": f"spiffe://{TD}/by-auditor", "parent_id": PARENT, "selectors": "unix:uid:9",
            "csrf": _csrf(page)}
    status, body = console.request("auditor", "/entries", form)
    assert status == 403 and "admin_readonly" in body


def test_other_svids_and_anonymous_callers_are_refused(console: Console) -> None:
    status, body = console.request("web", "/entries")
    assert status == 403 and "not an admin identity" in body
    status, _ = console.request(None, "/entries")
    assert status == 401
    status, _ = console.request(None, "/entries", {"csrf": "x"})
    assert status == 401


async def test_the_read_only_role_holds_on_the_grpc_admin_api_too(console: Console) -> None:
    from grpclib.client import Channel
    from grpclib.const import Status
    from grpclib.exceptions import GRPCError

    from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the server SVID names a SPIFFE ID, not a host
    ctx.load_verify_locations(cadata=console.server.cli("bundle", "show", "--format", "pem").stdout)
    ctx.set_alpn_protocols(["h2"])
    ctx.load_cert_chain(console.certs / "auditor" / "svid.pem", console.certs / "auditor" / "key.pem")
    channel = Channel(*console.server.address, ssl=ctx)
    try:
        api = AdminAPIStub(channel)
        assert (await api.CountEntries(admin_pb2.CountRequest())).count >= 3
        with pytest.raises(GRPCError) as info:
            await api.CreateEntry(admin_pb2.CreateEntryRequest(entry=types_pb2.Entry(
                spiffe_id=f"spiffe://{TD}/by-grpc-auditor", parent_id=PARENT,
                selectors=[types_pb2.Selector(type="unix", value="uid:9")])))
        assert info.value.status is Status.PERMISSION_DENIED and "admin_readonly" in (info.value.message or "")
    finally:
        channel.close()

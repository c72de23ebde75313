"""Console pages over a real SQLite datastore, in-process: the SVID chart counts, entry filters
across pages, the agents' last sync and the revocation confirmation note."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, types_pb2
from spiffe_py.audit import GENESIS_HASH, build_event, seal_record_text
from spiffe_py.clock import ManualClock
from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import TrustDomain
from spiffe_server.api.admin_service import AdminService
from spiffe_server.api.context import ServerContext
from spiffe_server.api.local_call import LocalCall, Principal
from spiffe_server.ca.keys import MemoryKeyManager
from spiffe_server.ca.manager import CaConfig, CaManager, MemoryJournalStore
from spiffe_server.config import ConsoleConfig, ServerConfig
from spiffe_server.console.web import Console
from spiffe_server.datastore import AttestedAgent, Issuance, RegistrationEntry, RevocationKind, open_datastore
from tests.support.policy_rules import PAYMENTS_RULE

NOW = datetime.now(UTC).replace(microsecond=0)  # the chart is "the last hour" of the console's clock
TD = TrustDomain.parse("example.org")
AGENT = "spiffe://example.org/spire/agent/join_token/t"
ADMIN = Principal(actor="uid:0", readonly=False)


@dataclass
class Env:
    ctx: ServerContext
    service: AdminService
    clock: ManualClock
    http: ClientSession
    base: str

    async def get(self, path: str) -> str:
        async with self.http.get(self.base + path) as response:
            assert response.status == 200, (path, await response.text())
            return await response.text()

    async def admin(self, method: str, request: Any) -> Any:
        stream = LocalCall(ADMIN, method, request)
        await getattr(self.service, method)(stream)
        return stream.response


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    clock = ManualClock(NOW)
    policy = tmp_path / "policy.toml"
    policy.write_text(PAYMENTS_RULE)
    ca = CaManager(CaConfig(trust_domain=TD), keys=MemoryKeyManager(), journal=MemoryJournalStore(), clock=clock)
    ca.rotate(NOW)
    ctx = ServerContext(config=ServerConfig(trust_domain=TD, data_dir=tmp_path, policy_file=policy),
                        store=open_datastore(tmp_path / "db"), ca=ca, clock=clock)
    service = AdminService(ctx)
    console = Console(ctx, service, ConsoleConfig(bind_port=0))
    await console.start()
    url, _ = console.logins.issue("test", readonly=False)
    session_id, _ = console.logins.redeem(url.split("token=")[1])
    try:
        async with ClientSession(headers={"Cookie": f"spiffe_console={session_id}"}) as http:
            yield Env(ctx, service, clock, http, f"http://127.0.0.1:{console.port}")
    finally:
        await console.close()
        ctx.store.close()


def _csr(spiffe_id: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).add_extension(
        x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=False).sign(
        key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


def _agent_records(*events: tuple[str, str]) -> list[str]:
    """Records of an agent's own audit chain (sealed as the agent seals them): (method, decision) each."""
    texts, prev = [], GENESIS_HASH
    for seq, (method, decision) in enumerate(events, 1):
        event = build_event(now=NOW, actor="agent", spiffe_id="spiffe://example.org/w", selectors=[],
                            decision=decision, reason="test", method=method, details={"rule": None})
        sealed, text = seal_record_text(event, seq=seq, prev_hash=prev)
        texts.append(text)
        prev = str(sealed["hash"])
    return texts


async def test_the_overview_chart_counts_svids_issued_and_denied(env: Env) -> None:
    ctx = env.ctx
    # server-side signing: admin mints (one X.509 and one JWT allowed, one payments JWT denied by policy)
    await env.admin("MintX509SVID", admin_pb2.MintX509SVIDRequest(csr=_csr("spiffe://example.org/a")))
    await env.admin("MintJWTSVID", admin_pb2.MintJWTSVIDRequest(spiffe_id="spiffe://example.org/a",
                                                                audience=["other"]))
    with pytest.raises(Exception, match="payments"):
        await env.admin("MintJWTSVID", admin_pb2.MintJWTSVIDRequest(spiffe_id="spiffe://example.org/a",
                                                                    audience=["payments"]))
    # an agent's batch: three SVIDs signed for one entry (one record, items=3), two CSRs of a
    # quarantined entry refused (one record, items=2)
    entry = RegistrationEntry(spiffe_id="spiffe://example.org/b", parent_id=AGENT,
                              selectors=(Selector("unix", "uid:1"),), created_at=NOW)
    held = RegistrationEntry(spiffe_id="spiffe://example.org/q", parent_id=AGENT,
                             selectors=(Selector("unix", "uid:2"),), created_at=NOW, quarantined=True, id="held")
    gate = ctx.guard.batch(actor=AGENT)
    for _ in range(3):
        gate.check(entry, None)
    for _ in range(2):
        with pytest.raises(Exception, match="quarantined"):
            gate.check(held, None)
    await gate.commit([Issuance(kind=RevocationKind.SERIAL, value=f"{n:x}0ff", spiffe_id=entry.spiffe_id,
                                expires_at=NOW + timedelta(hours=1), entry_id=entry.id, agent_id=AGENT)
                       for n in range(3)])
    # an agent's forwarded records: a JWT refused by the agent counts; handing out an SVID the server
    # signed already does not, nor does a forwarded record claiming a server method
    ctx.guard.audit.forward(AGENT, _agent_records(("FetchJWTSVID", "deny"), ("FetchX509SVID", "allow"),
                                                  ("FetchJWTSVID", "allow"), ("NewJWTSVID", "allow"),
                                                  ("ValidateJWTSVID", "deny")))
    await env.admin("CreateEntry", admin_pb2.CreateEntryRequest(entry=types_pb2.Entry(  # not about an SVID
        spiffe_id="spiffe://example.org/c", parent_id=AGENT, selectors=[types_pb2.Selector(type="unix",
                                                                                           value="uid:3")])))
    series = json.loads(await env.get("/overview/series"))
    assert sum(series["issued"]) == 1 + 1 + 3
    assert sum(series["denied"]) == 1 + 2 + 1
    assert series["issued"][-1] == 5  # all in the current minute, the chart's last point
    # counted once: a second request adds only what was appended since
    await env.admin("MintJWTSVID", admin_pb2.MintJWTSVIDRequest(spiffe_id="spiffe://example.org/a",
                                                                audience=["other"]))
    again = json.loads(await env.get("/overview/series"))
    assert (sum(again["issued"]), sum(again["denied"])) == (6, 4)
    overview = await env.get("/")
    assert "SVIDs issued and denied per minute" in overview


def _rows(page: str) -> int:
    return len(re.findall(r"<tr>", page.split("<tbody>")[1].split("</tbody>", maxsplit=1)[0]))


async def test_entry_filters_apply_across_all_entries_then_page(env: Env) -> None:
    entries = [RegistrationEntry(
        id=f"e{i:03}", spiffe_id=f"spiffe://example.org/w/{i}", parent_id=AGENT if i % 2 else f"{AGENT}-2",
        selectors=(Selector("unix", f"uid:{i}"), *((Selector("k8s", "ns:pay"),) if i % 3 == 0 else ())),
        created_at=NOW, labels={"team": "a" if i < 150 else "b", **({"tier": "gold"} if i % 37 == 5 else {})})
        for i in range(230)]
    env.ctx.store.create_entries(entries)
    # the first page of all entries (by ID) holds 3 of the 7 gold ones: the filter must look at all
    gold = [e for e in entries if e.labels.get("tier") == "gold"]
    assert len(gold) == 7 and _rows(await env.get("/entries")) == 100
    assert _rows(await env.get("/entries?label=tier%3Dgold")) == 7
    assert _rows(await env.get("/entries?label=tier")) == 7  # the key, whatever its value
    assert _rows(await env.get("/entries?label=tier%2Cteam%3Db")) == len([e for e in gold if e.labels["team"] == "b"])
    # paging after filtering: 150 team=a entries are two pages; the link keeps the filters
    first = await env.get("/entries?label=team%3Da")
    assert _rows(first) == 100
    link = re.search(r'href="(/entries\?[^"]+)" id="entries-next"', first)
    assert link and "label=team%3Da" in link.group(1)
    second = await env.get(link.group(1).replace("&amp;", "&"))
    assert _rows(second) == 50 and 'id="entries-next"' not in second
    # selectors: entries that have this one (by default), or exactly these; parent
    assert _rows(await env.get("/entries?selector=k8s%3Ans%3Apay&label=team%3Db")) == len(
        [i for i in range(150, 230) if i % 3 == 0])
    assert _rows(await env.get("/entries?selector=k8s%3Ans%3Apay&match=exact")) == 0
    assert _rows(await env.get(f"/entries?parent_id={AGENT}-2&label=tier")) == len(
        [e for e in gold if e.parent_id.endswith("-2")])
    async with env.http.get(env.base + "/entries?label=%3Dx") as bad:
        assert bad.status == 400 and "labels" in await bad.text()


async def test_agents_show_this_servers_last_sync(env: Env) -> None:
    for name in ("here", "there"):
        env.ctx.store.create_agent(AttestedAgent(
            spiffe_id=f"{AGENT}-{name}", attestation_type="join_token", serial="0a", created_at=NOW,
            updated_at=NOW, expires_at=NOW + timedelta(hours=1)))
    env.ctx.syncs.opened(f"{AGENT}-here", now=NOW)
    env.clock.advance(timedelta(seconds=30))
    env.ctx.syncs.synced(f"{AGENT}-here", now=env.clock.now())
    page = await env.get("/agents")
    cells = re.findall(r'<td class="last-sync">(.*?)</td>', page)
    assert len(cells) == 2
    assert (NOW + timedelta(seconds=30)).strftime("%H:%M:%S") in cells[0] and "connected" in cells[0]
    assert "not connected to this server" in cells[1]
    env.ctx.syncs.closed(f"{AGENT}-here")
    shown = await env.admin("GetAgent", admin_pb2.AgentRequest(spiffe_id=f"{AGENT}-here"))
    assert (shown.last_sync, shown.syncing) == (int((NOW + timedelta(seconds=30)).timestamp()), False)


async def test_revocations_say_agent_confirmation_is_not_tracked(env: Env) -> None:
    minted = await env.admin("MintJWTSVID", admin_pb2.MintJWTSVIDRequest(spiffe_id="spiffe://example.org/a",
                                                                         audience=["other"]))
    claims = json.loads(base64.urlsafe_b64decode(minted.token.split(".")[1] + "=="))
    await env.admin("RevokeSvid", admin_pb2.RevokeSvidRequest(jwt_id=claims["jti"], reason="test"))
    page = await env.get("/revocations")
    assert claims["jti"] in page
    assert page.count("agent confirmation not tracked") == 2  # the note and the one row

"""The bundle endpoint client against real HTTPS listeners serving good and hostile answers.

Each refused fetch must keep the last good bundle in the datastore, log a warning naming the
reason, and count the refusal in ``spiffe_server_federation_refreshes{result=<reason>}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from spiffe_py.bundle import SpiffeBundle
from spiffe_py.clock import SystemClock
from spiffe_py.spiffeid import TrustDomain
from spiffe_server.datastore import BundleRecord, DataStore, FederationRecord, open_datastore
from spiffe_server.federation.client import fetch_bundle
from spiffe_server.federation.refresher import Federation
from spiffe_server.federation.relationship import FetchRefused, Relationship, parse_relationship
from spiffe_server.metrics import REGISTRY
from tests.support.ca import CA, Issued
from tests.support.web_pki import WebPki

A = TrustDomain("a.test")
B = TrustDomain("b.test")
ENDPOINT_ID = "spiffe://b.test/spire/server"


@dataclass
class Endpoint:
    """A real TLS listener answering each GET with ``raw`` (a whole HTTP response, or a writer coroutine)."""

    cert: Path
    key: Path
    raw: bytes | Callable[[asyncio.StreamWriter], Awaitable[None]] = b""
    requests: int = 0
    server: asyncio.Server | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"https://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/"

    def serve_json(self, body: bytes) -> None:
        self.raw = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)

    def present(self, issued: Issued) -> None:
        self.cert.write_bytes(issued.chain_pem())
        self.key.write_bytes(issued.key_pem())

    async def start(self) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                if callable(self.raw):
                    await self.raw(writer)
                else:
                    writer.write(self.raw)
                    await writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
                pass
            finally:
                writer.close()

        def context() -> ssl.SSLContext:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.cert, self.key)
            return ctx

        base = context()
        base.sni_callback = lambda conn, _name, _ctx: setattr(conn, "context", context())  # newest files
        self.server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=base)


@dataclass
class Rig:
    endpoint: Endpoint
    store: DataStore
    fed: Federation
    b_ca: CA
    notified: list[int]

    def stored(self) -> SpiffeBundle:
        return SpiffeBundle.parse(B, self.store.get_bundle(B.name).data)


def refusals(reason: str) -> float:
    return REGISTRY.get_sample_value("spiffe_server_federation_refreshes_total",
                                     {"trust_domain": B.name, "result": reason}) or 0.0


async def _call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(func, *args, **kwargs)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    a_ca, b_ca = CA.create(A), CA.create(B)
    endpoint = Endpoint(tmp_path / "ep.pem", tmp_path / "ep.key")
    endpoint.present(b_ca.issue_svid(ENDPOINT_ID))
    await endpoint.start()
    store = open_datastore(tmp_path / "ds.sqlite3")
    rel = parse_relationship(B.name, endpoint.url, "https_spiffe", ENDPOINT_ID, own=A)
    store.create_federation(FederationRecord(trust_domain=B.name, bundle_endpoint_url=rel.bundle_endpoint_url,
                                             bundle_endpoint_profile="https_spiffe", endpoint_spiffe_id=ENDPOINT_ID,
                                             created_at=SystemClock().now()))
    # the bootstrap bundle an operator passes with --trust-domain-bundle-path
    store.set_bundle(BundleRecord(trust_domain=B.name, data=b_ca.spiffe_bundle(sequence_number=1).to_json()))
    notified: list[int] = []
    fed = Federation(store=store, own=a_ca.spiffe_bundle, clock=SystemClock(), static=(), call=_call,
                     notify=lambda: notified.append(1))
    endpoint.serve_json(b_ca.spiffe_bundle(sequence_number=2, refresh_hint=timedelta(seconds=300)).to_json())
    await fed.start()
    try:
        yield Rig(endpoint, store, fed, b_ca, notified)
    finally:
        await fed.close()
        assert endpoint.server is not None
        endpoint.server.close()
        store.close()


async def test_a_good_fetch_replaces_the_bundle_and_records_the_refresh(rig: Rig) -> None:
    status = await rig.fed.refresh(B)
    assert rig.stored().sequence_number == 2
    assert status.last_refresh is not None and status.last_error == ""
    assert rig.notified, "agents must be told about the new bundle"
    assert rig.store.get_federation(B.name).last_refresh is not None
    labels = {"trust_domain": B.name}
    assert REGISTRY.get_sample_value("spiffe_server_federation_bundle_age_seconds", labels) == 0
    last = REGISTRY.get_sample_value("spiffe_server_federation_last_refresh_timestamp_seconds", labels)
    assert last == pytest.approx(status.last_refresh.timestamp())


async def expect_refusal(rig: Rig, reason: str, caplog: pytest.LogCaptureFixture,
                         make_bad: Callable[[], None]) -> FetchRefused:
    """A good fetch, then ``make_bad()``, then a fetch that must be refused for ``reason``."""
    await rig.fed.refresh(B)
    good = rig.stored()
    assert good.sequence_number == 2
    make_bad()
    before = refusals(reason)
    with caplog.at_level(logging.WARNING, logger="spiffe_server.federation"), pytest.raises(FetchRefused) as exc:
        await rig.fed.refresh(B)
    assert rig.stored() == good, "a refused fetch must keep the last good bundle"
    assert refusals(reason) == before + 1
    assert any("keeping the last good one" in r.getMessage() and getattr(r, "reason", "") == reason
               for r in caplog.records), caplog.text
    assert rig.store.get_federation(B.name).last_error == str(exc.value)
    status = await rig.fed.status(B)
    assert status.last_error == str(exc.value) and status.last_refresh is not None  # the good fetch is still known
    return exc.value


def serving(rig: Rig, body: bytes) -> Callable[[], None]:
    return lambda: rig.endpoint.serve_json(body)


def raw(rig: Rig, writer: Callable[[asyncio.StreamWriter], Awaitable[None]]) -> Callable[[], None]:
    return lambda: setattr(rig.endpoint, "raw", writer)


async def test_wrong_endpoint_spiffe_id_is_refused_before_the_request(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    requests: list[int] = []

    def wrong_id() -> None:
        rig.endpoint.present(rig.b_ca.issue_svid("spiffe://b.test/not-the-server"))
        rig.endpoint.serve_json(rig.b_ca.spiffe_bundle(sequence_number=3).to_json())
        requests.append(rig.endpoint.requests)

    err = await expect_refusal(rig, "wrong_spiffe_id", caplog, wrong_id)
    assert "spiffe://b.test/not-the-server" in str(err)
    assert rig.endpoint.requests == requests[0], "no request may be sent to an endpoint with the wrong SPIFFE ID"


async def test_endpoint_of_an_untrusted_ca_is_refused(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    await expect_refusal(rig, "untrusted_endpoint", caplog,
                         lambda: rig.endpoint.present(CA.create(B).issue_svid(ENDPOINT_ID)))  # right ID, wrong CA


async def test_bundle_of_another_trust_domain_is_refused(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    err = await expect_refusal(rig, "wrong_trust_domain", caplog,
                               serving(rig, CA.create("c.test").spiffe_bundle(sequence_number=5).to_json()))
    assert "c.test" in str(err)


async def test_broken_key_is_refused(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    doc = json.loads(rig.b_ca.spiffe_bundle(sequence_number=5).to_json())
    jwt_key = next(k for k in doc["keys"] if k["use"] == "jwt-svid")
    jwt_key["x"] = jwt_key["x"][:-6] + "AAAAAA"  # not a point on the curve
    await expect_refusal(rig, "invalid_bundle", caplog, serving(rig, json.dumps(doc).encode()))


async def test_x509_authority_not_matching_its_key_is_refused(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    doc = json.loads(rig.b_ca.spiffe_bundle(sequence_number=5).to_json())
    other = json.loads(CA.create(B).spiffe_bundle().to_json())
    x509_key = next(k for k in doc["keys"] if k["use"] == "x509-svid")
    x509_key["x5c"] = next(k for k in other["keys"] if k["use"] == "x509-svid")["x5c"]
    await expect_refusal(rig, "invalid_bundle", caplog, serving(rig, json.dumps(doc).encode()))


async def test_oversized_body_is_refused_on_its_length(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    sent: list[int] = []

    async def huge(writer: asyncio.StreamWriter) -> None:  # announces 64 MiB, then streams it
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 67108864\r\n\r\n")
        for _ in range(1024):
            writer.write(b"x" * 65536)
            sent.append(1)
            await writer.drain()

    await expect_refusal(rig, "too_large", caplog, raw(rig, huge))
    assert len(sent) < 256, "the client must stop at the Content-Length, not read 64 MiB"


async def test_oversized_body_without_length_is_cut_at_the_cap(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    async def endless(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        for _ in range(64):
            writer.write(b" " * 65536)
            await writer.drain()

    await expect_refusal(rig, "too_large", caplog, raw(rig, endless))


async def test_oversized_chunked_body_is_refused(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    async def chunked(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(64):
            writer.write(b"10000\r\n" + b" " * 65536 + b"\r\n")
            await writer.drain()

    await expect_refusal(rig, "too_large", caplog, raw(rig, chunked))


async def test_older_sequence_is_refused(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    await expect_refusal(rig, "stale_sequence", caplog,
                         serving(rig, rig.b_ca.spiffe_bundle(sequence_number=1).to_json()))


async def test_empty_bundle_is_refused(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    await expect_refusal(rig, "invalid_bundle", caplog, serving(rig, b'{"keys": [], "spiffe_sequence": 9}'))


async def test_unreachable_endpoint_keeps_the_bundle(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    assert rig.endpoint.server is not None
    await expect_refusal(rig, "unreachable", caplog, rig.endpoint.server.close)


async def test_https_web_checks_the_host_against_the_system_trust_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pki = WebPki.create()
    endpoint = Endpoint(tmp_path / "web.pem", tmp_path / "web.key")
    pki.write_serving(endpoint.cert, endpoint.key, dns_names=["localhost"])
    await endpoint.start()
    bundle = CA.create(B).spiffe_bundle(sequence_number=4)
    endpoint.serve_json(bundle.to_json())
    try:
        rel = Relationship(B, endpoint.url, parse_relationship(B.name, endpoint.url, "https_web", "", own=A).profile)
        with pytest.raises(FetchRefused) as exc:  # the test root is not trusted yet
            await fetch_bundle(rel)
        assert exc.value.reason == "untrusted_endpoint"
        roots = tmp_path / "roots.pem"
        roots.write_bytes(pki.root_pem())
        monkeypatch.setenv("SSL_CERT_FILE", str(roots))
        assert SpiffeBundle.parse(B, await fetch_bundle(rel)) == bundle
        wrong_host = Relationship(B, endpoint.url.replace("127.0.0.1", "localhost.localdomain"), rel.profile)
        assert os.environ["SSL_CERT_FILE"] == str(roots)
        with pytest.raises(FetchRefused):  # the name is not on the certificate (or does not resolve)
            await fetch_bundle(wrong_host)
    finally:
        assert endpoint.server is not None
        endpoint.server.close()

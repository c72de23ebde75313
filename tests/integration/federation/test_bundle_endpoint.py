"""The bundle endpoint listener on real sockets: profiles, reloaded serving files, strict answers."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from spiffe_py.bundle import SpiffeBundle
from spiffe_py.spiffeid import TrustDomain
from spiffe_server.config import FederationEndpointConfig
from spiffe_server.federation.client import fetch_bundle
from spiffe_server.federation.endpoint import BundleEndpoint, respond
from spiffe_server.federation.relationship import FetchRefused, parse_relationship
from tests.support.ca import CA
from tests.support.web_pki import WebPki

A, B = TrustDomain("a.test"), TrustDomain("b.test")
SERVER_ID = "spiffe://b.test/spire/server"


async def no_crls() -> Sequence[bytes]:
    return ()


def test_respond_serves_the_bundle_with_its_hint_and_nothing_else() -> None:
    bundle = CA.create(B).spiffe_bundle(sequence_number=7, refresh_hint=timedelta(seconds=5))
    for path in ("/", "/bundle"):
        response = respond(bundle, None, "GET", path)
        doc = json.loads(response.body)
        assert (response.status, response.content_type) == (200, "application/json")
        assert (doc["spiffe_sequence"], doc["spiffe_refresh_hint"]) == (7, 5)
        assert {k["use"] for k in doc["keys"]} == {"x509-svid", "jwt-svid"}
    assert respond(bundle, None, "POST", "/").status == 405
    assert respond(bundle, None, "GET", "/keys").status == 404
    assert respond(bundle, None, "GET", "/?x=1").status == 404
    assert respond(bundle, (b"crl",), "GET", "/crl").body == b"crl"


async def test_https_spiffe_endpoint_serves_its_svid_and_follows_renewal(tmp_path: Path) -> None:
    ca = CA.create(B)
    svid_files = (tmp_path / "svid.pem", tmp_path / "svid.key")
    first = ca.issue_svid(SERVER_ID)
    svid_files[0].write_bytes(first.chain_pem())
    svid_files[1].write_bytes(first.key_pem())
    bundle = ca.spiffe_bundle(sequence_number=3)
    endpoint = BundleEndpoint(FederationEndpointConfig(bind_port=0), bundle=lambda: bundle, crls=no_crls,
                              svid_files=svid_files)
    await endpoint.start()
    try:
        rel = parse_relationship("b.test", f"https://127.0.0.1:{endpoint.port}", "https_spiffe", SERVER_ID, own=A)
        assert SpiffeBundle.parse(B, await fetch_bundle(rel, roots=[ca.cert])) == bundle
        renewed = ca.issue_svid("spiffe://b.test/renamed")  # a renewal the client must notice
        svid_files[1].write_bytes(renewed.key_pem())
        svid_files[0].write_bytes(renewed.chain_pem())
        for _ in range(50):  # the files are polled every second
            try:
                await fetch_bundle(rel, roots=[ca.cert])
            except FetchRefused as err:
                assert err.reason == "wrong_spiffe_id"
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the renewed SVID was not served within 5 s")
    finally:
        await endpoint.close()


async def test_https_web_endpoint_reloads_its_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pki = WebPki.create()
    cert, key = tmp_path / "web.pem", tmp_path / "web.key"
    pki.write_serving(cert, key, dns_names=["localhost"])
    (tmp_path / "root.pem").write_bytes(pki.root_pem())
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "root.pem"))
    bundle = CA.create(B).spiffe_bundle(sequence_number=1)
    cfg = FederationEndpointConfig(bind_port=0, profile="https_web", cert_file=cert, key_file=key)
    endpoint = BundleEndpoint(cfg, bundle=lambda: bundle, crls=no_crls, svid_files=(tmp_path / "x", tmp_path / "y"))
    await endpoint.start()
    try:
        url = f"https://localhost:{endpoint.port}/"
        rel = parse_relationship("b.test", url, "https_web", "", own=A)
        assert SpiffeBundle.parse(B, await fetch_bundle(rel)) == bundle
        served = await _served_serial(endpoint.port)
        new = pki.write_serving(cert, key, dns_names=["localhost"])
        for _ in range(50):  # the files are polled every second
            if await _served_serial(endpoint.port) == new.serial_number:
                break
            await asyncio.sleep(0.1)
        assert await _served_serial(endpoint.port) == new.serial_number != served
    finally:
        await endpoint.close()


async def _served_serial(port: int) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return x509.load_der_x509_certificate(der).serial_number


async def test_insecure_http_serves_plain_http_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    bundle = CA.create(B).spiffe_bundle(sequence_number=1)
    endpoint = BundleEndpoint(FederationEndpointConfig(bind_port=0, insecure_http=True), bundle=lambda: bundle,
                              crls=no_crls, svid_files=(Path("/nonexistent"), Path("/nonexistent")))
    await endpoint.start()
    try:
        assert "serving plain HTTP" in caplog.text
        reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
        writer.write(b"GET /bundle HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await reader.read()
        writer.close()
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and SpiffeBundle.parse(B, body) == bundle
    finally:
        await endpoint.close()

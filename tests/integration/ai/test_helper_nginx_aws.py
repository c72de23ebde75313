"""``spiffe-agent helper`` feeding a real nginx (mTLS) and a boto3 web-identity token file, 10 s SVIDs, 60 s.

- nginx (Debian's package) is the helper's managed child; the helper rewrites its certificate,
  key and bundle on every rotation and sends SIGHUP. A client keeps opening new mTLS connections:
  not one handshake may fail, and nginx must present several successive certificates.
- The same helper keeps ``aws.jwt``, ``gcp.jwt`` and ``azure.jwt`` fresh. boto3, with only
  ``AWS_WEB_IDENTITY_TOKEN_FILE`` and ``AWS_ROLE_ARN``, calls STS (moto's server mode) through a
  front that validates each WebIdentityToken as AWS would (our OIDC discovery + JWKS over HTTPS).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from examples.oidc_token_exchange.sts import Registration, Rejected, _b64
from spiffe_py.workloadapi import WorkloadApiClient, X509Source
from spiffe_py.x509svid import X509Svid
from tests.integration.ai.conftest import WORKLOAD_ID, SdkRuns, World
from tests.support.server_proc import free_port

RUN_S = 60
AWS_AUDIENCE = "sts.amazonaws.com"
GCP_AUDIENCE = "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/spiffe/providers/example"
AZURE_AUDIENCE = "api://AzureADTokenExchange"
ROLE_ARN = "arn:aws:iam::123456789012:role/spiffe-billing"


def _nginx() -> str:
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if path is None:
        pytest.skip("nginx is not installed (apt-get install -y nginx)")
    return path


def _write_config(world: World, tmp: Path, nginx: str, port: int) -> Path:
    certs = tmp / "certs"
    certs.mkdir()
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / sub).mkdir()
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
error_log {tmp}/error.log notice;
pid {tmp}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {certs}/svid.pem;
        ssl_certificate_key {certs}/svid_key.pem;
        ssl_client_certificate {certs}/svid_bundle.pem;
        ssl_verify_client on;
        ssl_verify_depth 3;
        location / {{ return 200 "hello mtls\\n"; }}
    }}
}}
""")
    helper = tmp / "helper.toml"
    helper.write_text(f"""
agent_address = "{world.address}"
cmd = "{nginx}"
cmd_args = "-p {tmp} -c {conf} -g \\"daemon off;\\""
renew_signal = "SIGHUP"
pid_file_name = "{tmp}/watcher.pid"
cert_dir = "{certs}"
svid_file_name = "svid.pem"
svid_key_file_name = "svid_key.pem"
svid_bundle_file_name = "svid_bundle.pem"
jwt_bundle_file_name = "jwt_bundle.json"
jwt_svids = [
    {{ jwt_audience = "{AWS_AUDIENCE}", jwt_svid_file_name = "aws.jwt" }},
    {{ jwt_audience = "{GCP_AUDIENCE}", jwt_svid_file_name = "gcp.jwt" }},
    {{ jwt_audience = "{AZURE_AUDIENCE}", jwt_svid_file_name = "azure.jwt" }},
]
""")
    return helper


# -- the mTLS client --------------------------------------------------------------------------------

@dataclass
class Handshakes:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    served_serials: set[int] = field(default_factory=set)


def _client_context(svid: X509Svid, bundle_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # SPIFFE: the peer is checked by its URI SAN below, not a host name
    ctx.load_verify_locations(cadata=bundle_pem.decode())
    with tempfile.TemporaryDirectory() as d:
        cert, key = Path(d) / "c.pem", Path(d) / "k.pem"
        cert.write_bytes(svid.chain_pem())
        key.write_bytes(svid.key_pem())
        ctx.load_cert_chain(cert, key)
    return ctx


def _keep_connecting(source: X509Source, port: int, stop: threading.Event, result: Handshakes) -> None:
    built: tuple[X509Svid, ssl.SSLContext] | None = None
    while not stop.is_set():
        svid = source.get_x509_svid()
        if built is None or built[0] is not svid:
            bundle = source.get_x509_bundle_for_trust_domain(svid.spiffe_id.trust_domain).to_pem()
            built = (svid, _client_context(svid, bundle))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                    built[1].wrap_socket(raw) as tls:
                der = tls.getpeercert(binary_form=True)
                assert der is not None
                peer = x509.load_der_x509_certificate(der)
                sans = peer.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
                if uris != [WORKLOAD_ID]:
                    raise AssertionError(f"nginx presented {uris}")
                tls.sendall(b"GET / HTTP/1.1\r\nHost: nginx\r\nConnection: close\r\n\r\n")
                reply = b""
                while chunk := tls.recv(4096):
                    reply += chunk
                if not reply.startswith(b"HTTP/1.1 200") or b"hello mtls" not in reply:
                    raise AssertionError(f"unexpected reply {reply[:80]!r}")
                result.ok += 1
                result.served_serials.add(peer.serial_number)
        except Exception as err:  # every failure counts
            result.failures.append(f"{time.strftime('%X')} {type(err).__name__}: {err}")
        stop.wait(0.1)


# -- the STS front (validates like AWS, then forwards to moto) ---------------------------------------

@dataclass
class StsFront:
    registration: Registration
    moto_url: str
    accepted: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def serve(self) -> ThreadingHTTPServer:
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, 64 * 1024))
                form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
                if form.get("Action") == "AssumeRoleWithWebIdentity":
                    try:
                        token = form.get("WebIdentityToken", "")
                        claims = front.registration.verify(token)
                        if form.get("RoleArn") != ROLE_ARN:
                            raise Rejected("invalid_grant", "unexpected role")
                        front.accepted.append({**claims, "kid": json.loads(_b64(token.split(".")[0])).get("kid")})
                    except Rejected as err:
                        front.refused.append(str(err))
                        self._reply(400, b"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>"
                                         b"<Message>" + str(err).encode() + b"</Message></Error></ErrorResponse>",
                                    "text/xml")
                        return
                req = urllib.request.Request(front.moto_url + self.path, data=body, method="POST",
                                             headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                try:
                    with urllib.request.urlopen(req, timeout=10) as resp:
                        self._reply(resp.status, resp.read(), resp.headers.get("Content-Type", "text/xml"))
                except urllib.error.HTTPError as err:
                    self._reply(err.code, err.read(), err.headers.get("Content-Type", "text/xml"))

            def _reply(self, status: int, data: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


@pytest.fixture
def sts(world: World) -> Iterator[tuple[StsFront, int]]:
    from moto.server import ThreadedMotoServer

    moto_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    front = StsFront(Registration(world.issuer, AWS_AUDIENCE, world.oidc_pki.client_context()),
                     f"http://127.0.0.1:{moto_port}")
    server = front.serve()
    try:
        yield front, server.server_address[1]
    finally:
        server.shutdown()
        moto.stop()


def _keep_assuming(token_file: Path, sts_port: int, stop: threading.Event, ok: list[str], failed: list[str]) -> None:
    import boto3

    while not stop.is_set():
        try:  # a new session resolves credentials again: it re-reads the token file and calls STS
            identity = boto3.Session(region_name="us-east-1").client("sts").get_caller_identity()
            ok.append(identity["Arn"])
        except Exception as err:
            failed.append(f"{type(err).__name__}: {err}")
        stop.wait(1.0)


# A process the helper did not start: it names itself in a pid file and counts the SIGHUPs it gets.
WATCHER = """
import os, signal, sys, time
count = 0
def hup(*_):
    global count
    count += 1
    open(sys.argv[2], "w").write(str(count))
signal.signal(signal.SIGHUP, hup)
open(sys.argv[1], "w").write(str(os.getpid()))
while True:
    time.sleep(1)
"""


def _jwt_claims(path: Path) -> dict[str, Any]:
    claims: dict[str, Any] = json.loads(_b64(path.read_text().split(".")[1]))
    return claims


@pytest.mark.slow
def test_helper_rotates_nginx_mtls_and_token_files_with_no_failure(
        world: World, sts: tuple[StsFront, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        sdk_runs: SdkRuns) -> None:  # sdk_runs: the SDK apps run meanwhile (their own test checks them)
    nginx = _nginx()
    front, sts_port = sts
    port = free_port()
    config = _write_config(world, tmp_path, nginx, port)
    certs = tmp_path / "certs"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(certs / "aws.jwt"))
    monkeypatch.setenv("AWS_ROLE_ARN", ROLE_ARN)
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "spiffe-helper-test")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", f"http://127.0.0.1:{sts_port}")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    watcher = subprocess.Popen([sys.executable, "-c", WATCHER, str(tmp_path / "watcher.pid"),
                                str(tmp_path / "watcher.count")])
    log = tmp_path / "helper.log"
    with log.open("wb") as out:
        argv = [str(Path(sys.executable).parent / "spiffe-agent"), "helper", "--config", str(config)]
        helper = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    stop = threading.Event()
    try:
        deadline = time.monotonic() + 20
        while not (certs / "aws.jwt").exists() or not _listening(port):
            assert helper.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"nginx never came up:\n{log.read_text()}\n" + \
                ((tmp_path / "error.log").read_text() if (tmp_path / "error.log").exists() else "")
            time.sleep(0.2)
        with WorkloadApiClient(world.address) as client, X509Source.start(client, timeout=10) as source:
            shakes = Handshakes()
            aws_ok: list[str] = []
            aws_failed: list[str] = []
            threads = [threading.Thread(target=_keep_connecting, args=(source, port, stop, shakes)),
                       threading.Thread(target=_keep_assuming, args=(certs / "aws.jwt", sts_port, stop, aws_ok,
                                                                    aws_failed))]
            for t in threads:
                t.start()
            file_checks = 0
            end = time.monotonic() + RUN_S
            while time.monotonic() < end:
                time.sleep(5)
                for name, audience in (("aws.jwt", AWS_AUDIENCE), ("gcp.jwt", GCP_AUDIENCE),
                                       ("azure.jwt", AZURE_AUDIENCE)):
                    claims = _jwt_claims(certs / name)
                    assert claims["exp"] > time.time(), f"{name} holds an expired JWT-SVID"
                    assert audience in claims["aud"] and claims["sub"] == WORKLOAD_ID
                    assert stat.S_IMODE((certs / name).stat().st_mode) == 0o600
                assert stat.S_IMODE((certs / "svid_key.pem").stat().st_mode) == 0o600
                file_checks += 1
            stop.set()
            for t in threads:
                t.join(30)
    finally:
        stop.set()
        helper.terminate()
        helper_rc = helper.wait(20)
        watcher.kill()
        watcher.wait()
    assert helper_rc == 0, log.read_text()[-3000:]
    assert shakes.failures == [], shakes.failures[:10]
    assert shakes.ok >= 200, shakes.ok
    assert len(shakes.served_serials) >= 6, "nginx did not follow the rotations"  # 10 s TTL, renewed at half-life
    assert aws_failed == [] and len(aws_ok) >= 30, (aws_failed[:5], len(aws_ok))
    assert all(":assumed-role/spiffe-billing/" in arn for arn in aws_ok)
    assert front.refused == []
    assert len({c["jti"] for c in front.accepted}) >= 5, "the token file did not rotate"
    assert file_checks >= 10
    # the process named by pid_file_name was signalled on the rotations too
    assert int((tmp_path / "watcher.count").read_text()) >= 5
    assert json.loads((certs / "jwt_bundle.json").read_text())  # {td: base64 JWKS}
    assert not _listening(port), "nginx outlived the helper"


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False

"""Runtime behaviour of a real spiffe-server: PostgreSQL datastore, HTTP health/metrics, CA rotation."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.verification import PolicyBuilder, Store
from grpclib.client import Channel

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, agent_pb2
from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub
from tests.integration.server.agent_client import agent_channel, attest, csr_for
from tests.support.ca import CA
from tests.support.server_proc import ServerProc, free_port

TD = "spiffe://example.org"


def test_postgres_datastore_keeps_state_across_restart(pg_schema: str) -> None:
    with ServerProc.start(extra_args=["--database", pg_schema]) as srv:
        entry = srv.cli_json("entry", "create", "--spiffe-id", f"{TD}/pg", "--parent-id", f"{TD}/node",
                             "--selector", "unix:uid:1")
        roots = srv.cli("bundle", "show").stdout
        token = srv.cli_json("token", "generate")["value"]
        srv.restart()
        assert srv.cli("bundle", "show").stdout == roots
        assert srv.cli_json("entry", "show", "--entry-id", entry["id"])["entries"][0]["spiffe_id"] == f"{TD}/pg"
        agent = asyncio.run(attest(srv, "join_token", token.encode()))
        assert srv.cli_json("agent", "list")["agents"][0]["spiffe_id"] == agent.spiffe_id
        assert not (srv.data_dir / "datastore.sqlite3").exists()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_http_health_and_metrics_listeners() -> None:
    health_port, metrics_port = free_port(), free_port()
    config = (f'[health]\nbind_port = {health_port}\nlive_path = "/livez"\n'
              f'[metrics]\nbind_port = {metrics_port}\n')
    with ServerProc.start(config_text=config) as srv:
        assert _get(f"http://127.0.0.1:{health_port}/livez") == (200, '{"live": true}')
        status, body = _get(f"http://127.0.0.1:{health_port}/ready")
        assert status == 200 and '"ready": true' in body and '"datastore": "ok"' in body
        assert _get(f"http://127.0.0.1:{health_port}/nope")[0] == 404
        token = srv.cli_json("token", "generate")["value"]
        asyncio.run(attest(srv, "join_token", token.encode()))
        status, metrics = _get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        assert 'spiffe_server_ca_sign_total{kind="agent"} 1.0' in metrics
        assert "spiffe_server_bundle_sequence" in metrics


def _verify(chain: list[x509.Certificate], roots: list[x509.Certificate]) -> None:
    PolicyBuilder().store(Store(roots)).build_client_verifier().verify(chain[0], chain[1:])


def _server_leaf(srv: ServerProc, roots: list[x509.Certificate]) -> x509.Certificate:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata="".join(r.public_bytes(Encoding.PEM).decode() for r in roots))
    with socket.create_connection(srv.address, timeout=10) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


@pytest.mark.slow
async def test_rotation_every_svid_chains_to_current_bundle() -> None:
    """ca_ttl 60s, SVID TTL 10s: across CA rotations every SVID (workload, agent, server TLS) verifies."""
    config = 'ca_ttl = "60s"\ndefault_x509_svid_ttl = "10s"\ndefault_jwt_svid_ttl = "10s"\n'
    with ServerProc.start(config_text=config) as srv:
        channel = Channel(path=str(srv.socket_path))
        admin = AdminAPIStub(channel)
        token = (await admin.CreateJoinToken(admin_pb2.CreateJoinTokenRequest())).value
        agent = await attest(srv, "join_token", token.encode())
        seen_roots: set[bytes] = set()
        server_serials: set[int] = set()
        deadline = time.monotonic() + 80
        after_rotation = 5  # checks once the CA and the server SVID have both rotated, then stop
        try:
            while time.monotonic() < deadline and after_rotation > 0:
                if len(seen_roots) >= 2 and len(server_serials) >= 2:
                    after_rotation -= 1
                key = ec.generate_private_key(ec.SECP256R1())
                minted = await admin.MintX509SVID(admin_pb2.MintX509SVIDRequest(csr=csr_for(key, f"{TD}/w")))
                bundle = await admin.GetBundle(admin_pb2.GetBundleRequest())
                roots = [x509.load_der_x509_certificate(d) for d in bundle.x509_authorities]
                seen_roots.update(bundle.x509_authorities)
                _verify([x509.load_der_x509_certificate(d) for d in minted.svid_chain], roots)
                token = (await admin.MintJWTSVID(admin_pb2.MintJWTSVIDRequest(spiffe_id=f"{TD}/w",
                                                                              audience=["a"]))).token
                bundle = await admin.GetBundle(admin_pb2.GetBundleRequest())
                assert jwt.get_unverified_header(token)["kid"] in {k.key_id for k in bundle.jwt_authorities}
                async with agent_channel(srv, agent) as stub:
                    renewed = await stub.RenewAgent(agent_pb2.RenewAgentRequest(csr=csr_for(agent.key)))
                agent.chain = [x509.load_der_x509_certificate(d) for d in renewed.svid_chain]
                _verify(agent.chain, roots)
                leaf = await asyncio.to_thread(_server_leaf, srv, roots)
                server_serials.add(leaf.serial_number)
                await asyncio.sleep(1)
        finally:
            channel.close()
        assert len(seen_roots) >= 2, "the CA never rotated"
        assert len(server_serials) >= 2, "the server SVID was never renewed"


async def test_upstream_authority_chain_verifies(tmp_path: Path) -> None:
    """With a disk upstream CA our CA is an intermediate: minted and agent SVIDs chain to the upstream root."""
    upstream = CA.create("example.org")
    (tmp_path / "up.pem").write_bytes(upstream.cert.public_bytes(Encoding.PEM))
    (tmp_path / "up.key").write_bytes(upstream.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    config = f'[upstream_authority]\ncert_file = "{tmp_path / "up.pem"}"\nkey_file = "{tmp_path / "up.key"}"\n'
    with ServerProc.start(config_text=config) as srv:
        roots_pem = srv.cli("bundle", "show").stdout
        assert x509.load_pem_x509_certificates(roots_pem.encode()) == [upstream.cert]
        out = tmp_path / "mint"
        srv.cli("x509", "mint", "--spiffe-id", f"{TD}/up", "--write", str(out))
        chain = x509.load_pem_x509_certificates((out / "svid.pem").read_bytes())
        assert len(chain) == 2  # leaf + our intermediate CA; the upstream root is only in the bundle
        verify = subprocess.run(["openssl", "verify", "-CAfile", str(out / "bundle.pem"), "-untrusted",
                                 str(out / "svid.pem"), str(out / "svid.pem")], capture_output=True, text=True,
                                check=False)
        assert verify.returncode == 0, verify.stderr
        token = srv.cli_json("token", "generate")["value"]
        agent = await attest(srv, "join_token", token.encode())
        async with agent_channel(srv, agent, roots_pem) as stub:   # mTLS through the intermediate
            renewed = await stub.RenewAgent(agent_pb2.RenewAgentRequest(csr=csr_for(agent.key)))
        _verify([x509.load_der_x509_certificate(d) for d in renewed.svid_chain], [upstream.cert])


async def test_shared_postgres_change_reaches_agent_of_other_server(pg_schema: str) -> None:
    """An entry created through server B is pushed by server A to its agent (change-counter poll)."""
    with ServerProc.start(extra_args=["--database", pg_schema]) as a:
        b = ServerProc.start(extra_args=["--database", pg_schema], data_dir=a.data_dir,
                             socket_path=a.data_dir.parent / "b.sock")
        try:
            token = a.cli_json("token", "generate")["value"]
            agent = await attest(a, "join_token", token.encode())
            async with agent_channel(a, agent) as stub, stub.SyncAuthorized.open() as stream:
                await stream.send_message(agent_pb2.SyncAuthorizedRequest(), end=True)
                full = await asyncio.wait_for(stream.recv_message(), 20)
                assert full is not None and full.full and not full.entries
                created = await asyncio.to_thread(
                    b.cli_json, "entry", "create", "--spiffe-id", f"{TD}/from-b", "--parent-id", agent.spiffe_id,
                    "--selector", "unix:uid:7")
                pushed = await asyncio.wait_for(stream.recv_message(), 20)
                assert pushed is not None and [e.id for e in pushed.entries] == [created["id"]]
                await stream.cancel()
        finally:
            b.stop()

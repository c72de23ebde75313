"""Two trust domains, two real servers with one real agent each, federating through bundle endpoints.

``a.test`` fetches ``b.test``'s bundle over https_spiffe (a relationship made with
``federation create``); ``b.test`` fetches ``a.test``'s over https_web with a test web CA
(a static relationship from its config). The swapped pairing is checked separately, so each
direction runs under each profile. Workloads (this process, through each agent's Workload API)
do mTLS with ``spiffe_py.tls`` authorising each other's SPIFFE ID and validate each other's
JWT-SVIDs; py-spiffe reads the federated bundles too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from grpclib.client import Channel
from OpenSSL import SSL

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2
from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub
from spiffe_py.bundle import SpiffeBundle
from spiffe_py.errors import SpiffeError
from spiffe_py.spiffeid import TrustDomain
from spiffe_py.tls import authorize_id, client_context, handshake, server_context
from spiffe_py.workloadapi import WorkloadApiClient
from spiffe_py.x509svid import X509Svid
from spiffe_server.api.convert import bundle_from_proto
from tests.support.agent_proc import AgentProc
from tests.support.server_proc import ServerProc, free_port
from tests.support.web_pki import WebPki

A, B = TrustDomain("a.test"), TrustDomain("b.test")
REFRESH_S = 5
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (SpiffeError, AssertionError) as err:
            last = err
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


def endpoint_table(port: int, profile: str, web: tuple[Path, Path] | None) -> str:
    text = (f'[federation.bundle_endpoint]\nbind_port = {port}\nrefresh_hint = "{REFRESH_S}s"\n'
            f'profile = "{profile}"\n')
    if profile == "https_web":
        assert web is not None
        text += f'cert_file = "{web[0]}"\nkey_file = "{web[1]}"\n'
    return text


@dataclass
class Domain:
    server: ServerProc
    agent: AgentProc
    workload_id: str

    @property
    def td(self) -> TrustDomain:
        return TrustDomain(self.server.trust_domain)

    def client(self) -> WorkloadApiClient:
        return WorkloadApiClient(self.agent.address, timeout=10)

    def foreign_roots(self, td: TrustDomain) -> set[bytes]:
        """DER of the X.509 authorities of ``td`` that this domain's workload receives."""
        with self.client() as client:
            bundle = client.fetch_x509_context().bundles.get_x509_bundle_for_trust_domain(td)
        return {c.public_bytes(Encoding.DER) for c in bundle.authorities}

    def svid(self, spiffe_id: str) -> X509Svid:
        with self.client() as client:
            svids = client.fetch_x509_context().svids
        return next(s for s in svids if str(s.spiffe_id) == spiffe_id)

    def create_entry(self, spiffe_id: str, *federates_with: str, check: bool = True) -> Any:
        args = ["entry", "create", "--parent-id", self.agent.agent_id, "--spiffe-id", spiffe_id,
                "--selector", f"unix:uid:{os.geteuid()}"]
        for td in federates_with:
            args += ["--federates-with", td]
        return self.server.cli(*args, check=check)


@dataclass
class Pair:
    a: Domain
    b: Domain
    web_root: Path


@contextlib.contextmanager
def federated_servers(tmp: Path, *, a_to_b: str, b_to_a: str) -> Iterator[tuple[ServerProc, ServerProc, Path]]:
    """a fetches b over ``a_to_b`` (federation create), b fetches a over ``b_to_a`` (static config)."""
    pki = WebPki.create()
    web_root = tmp / "web-root.pem"
    web_root.write_bytes(pki.root_pem())
    ports = {"a": free_port(), "b": free_port()}
    web = {name: (tmp / f"{name}-web.pem", tmp / f"{name}-web.key") for name in ports}
    for name in ports:
        pki.write_serving(*web[name], dns_names=["localhost"])
    # each server serves with the profile its peer fetches with
    a_config = endpoint_table(ports["a"], b_to_a, web["a"])
    b_config = endpoint_table(ports["b"], a_to_b, web["b"])
    b_config += (f'[federation.federates_with."a.test"]\nbundle_endpoint_url = "https://localhost:{ports["a"]}"\n'
                 f'bundle_endpoint_profile = "{b_to_a}"\n')
    if b_to_a == "https_spiffe":
        b_config += 'endpoint_spiffe_id = "spiffe://a.test/spire/server"\n'
        b_config += f'trust_domain_bundle_path = "{tmp / "a-bootstrap.json"}"\n'
    env = {"SSL_CERT_FILE": str(web_root)}  # https_web trusts the system store: here, the test root
    with contextlib.ExitStack() as stack:
        a_srv = stack.enter_context(ServerProc.start(trust_domain="a.test", config_text=a_config, env=env))
        (tmp / "a-bootstrap.json").write_bytes(own_bundle(a_srv).to_json())
        b_srv = stack.enter_context(ServerProc.start(trust_domain="b.test", config_text=b_config, env=env))
        (tmp / "b-bootstrap.json").write_bytes(own_bundle(b_srv).to_json())
        host = "127.0.0.1" if a_to_b == "https_spiffe" else "localhost"
        create = ["federation", "create", "--trust-domain", "b.test",
                  "--bundle-endpoint-url", f"https://{host}:{ports['b']}", "--bundle-endpoint-profile", a_to_b]
        if a_to_b == "https_spiffe":
            create += ["--endpoint-spiffe-id", "spiffe://b.test/spire/server",
                       "--trust-domain-bundle-path", str(tmp / "b-bootstrap.json")]
        a_srv.cli_json(*create)
        yield a_srv, b_srv, web_root


@contextlib.contextmanager
def federated_pair(tmp: Path, *, a_to_b: str, b_to_a: str) -> Iterator[Pair]:
    """:func:`federated_servers` with one agent each and a workload entry federating with the other side."""
    with federated_servers(tmp, a_to_b=a_to_b, b_to_a=b_to_a) as (a_srv, b_srv, web_root), \
            contextlib.ExitStack() as stack:
        agents = [stack.enter_context(AgentProc.start(srv, f"{srv.trust_domain}-agent")) for srv in (a_srv, b_srv)]
        for agent in agents:
            agent.wait_ready()
        pair = Pair(Domain(a_srv, agents[0], "spiffe://a.test/web"), Domain(b_srv, agents[1], "spiffe://b.test/api"),
                    web_root)
        pair.a.create_entry(pair.a.workload_id, "b.test")
        pair.b.create_entry(pair.b.workload_id, "a.test")
        for here, there in ((pair.a, pair.b), (pair.b, pair.a)):
            wait_for(lambda h=here, t=there: h.foreign_roots(t.td), 30, f"{there.td.name} bundle in {here.td.name}")
        yield pair


def mtls(server_svid: X509Svid, server: Domain, client_svid: X509Svid, client: Domain) -> str:
    """One mTLS exchange through spiffe_py.tls, each side authorising exactly the other's ID."""
    with server.client() as sc, client.client() as cc:
        server_bundles, client_bundles = sc.fetch_x509_context().bundles, cc.fetch_x509_context().bundles
    s_ctx = server_context(_Fixed(server_svid), server_bundles, authorize_id(client_svid.spiffe_id))
    c_ctx = client_context(_Fixed(client_svid), client_bundles, authorize_id(server_svid.spiffe_id))
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[str] = []

    def serve() -> None:
        sock, _ = listener.accept()
        conn = SSL.Connection(s_ctx, sock)
        conn.set_accept_state()
        try:
            seen.append(str(handshake(conn)))
            conn.sendall(b"hello\n")
        except (SSL.Error, SpiffeError, OSError) as err:
            seen.append(f"refused: {err!r}")
        finally:
            sock.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        sock = socket.create_connection(listener.getsockname(), timeout=10)
        sock.settimeout(None)  # pyOpenSSL needs a blocking socket
        conn = SSL.Connection(c_ctx, sock)
        conn.set_connect_state()
        peer = handshake(conn)
        assert conn.recv(16) == b"hello\n"
        sock.close()
        thread.join(10)
    finally:
        listener.close()
    assert seen == [str(client_svid.spiffe_id)], seen
    return str(peer)


@dataclass(frozen=True)
class _Fixed:
    svid: X509Svid

    def get_x509_svid(self) -> X509Svid:
        return self.svid


def check_mtls_both_ways(pair: Pair) -> None:
    a_svid, b_svid = pair.a.svid(pair.a.workload_id), pair.b.svid(pair.b.workload_id)
    assert mtls(a_svid, pair.a, b_svid, pair.b) == pair.a.workload_id
    assert mtls(b_svid, pair.b, a_svid, pair.a) == pair.b.workload_id


def check_jwt_both_ways(pair: Pair) -> None:
    for issuer, verifier in ((pair.a, pair.b), (pair.b, pair.a)):
        with issuer.client() as ic, verifier.client() as vc:
            token = ic.fetch_jwt_svid(f"aud-{verifier.td.name}").token
            validated = vc.validate_jwt_svid(token, f"aud-{verifier.td.name}")
        assert str(validated.spiffe_id) == issuer.workload_id


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with federated_pair(tmp_path_factory.mktemp("fed"), a_to_b="https_spiffe", b_to_a="https_web") as p:
        yield p


def test_federates_with_is_refused_without_bundle_or_relationship(pair: Pair) -> None:
    out = pair.a.create_entry("spiffe://a.test/c-client", "c.test", check=False)
    assert out.returncode == 1
    assert "no bundle and no federation relationship for 'c.test'" in out.stderr
    batch = {"entries": [{"spiffe_id": f"spiffe://a.test/batch-{td}", "parent_id": pair.a.agent.agent_id,
                          "selectors": [{"type": "unix", "value": "uid:1"}], "federates_with": [td]}
                         for td in ("c.test", "b.test")]}
    out = pair.a.server.cli("entry", "create", "--data", "-", "--output", "json", check=False,
                            stdin=json.dumps(batch).encode())
    assert out.returncode == 1  # one item failed
    results = json.loads(out.stdout)["results"]
    assert [r["status"]["code"] for r in results] == [3, 0]  # INVALID_ARGUMENT alone; b.test has a relationship
    assert "no bundle and no federation relationship for 'c.test'" in results[0]["status"]["message"]


def test_list_shows_both_relationships_with_their_last_refresh(pair: Pair) -> None:
    a_rels = pair.a.server.cli_json("federation", "list")["relationships"]
    assert [(r["trust_domain"], r["bundle_endpoint_profile"], r["source"]) for r in a_rels] == \
        [("b.test", "https_spiffe", "api")]
    assert a_rels[0]["bundle_endpoint_url"].startswith("https://127.0.0.1:")
    assert a_rels[0]["last_refresh"] is not None and a_rels[0]["last_error"] is None
    b_rels = pair.b.server.cli_json("federation", "list")["relationships"]
    assert [(r["trust_domain"], r["bundle_endpoint_profile"], r["source"]) for r in b_rels] == \
        [("a.test", "https_web", "config")]
    assert b_rels[0]["last_refresh"] is not None


def test_workloads_do_mtls_and_validate_jwts_across_domains(pair: Pair) -> None:
    check_mtls_both_ways(pair)
    check_jwt_both_ways(pair)


@pytest.mark.parametrize("side", ["a.test", "b.test"])
def test_py_spiffe_sees_the_federated_bundle_and_validates_a_foreign_jwt(pair: Pair, side: str) -> None:
    """py-spiffe as the workload on each side: the other domain's bundle and JWT-SVIDs."""
    from spiffe import TrustDomain as PyTrustDomain
    from spiffe import WorkloadApiClient as PySpiffeClient

    here, there, foreign = (pair.a, pair.b, B) if side == "a.test" else (pair.b, pair.a, A)
    with there.client() as other:
        token = other.fetch_jwt_svid(f"aud-{side}").token
    with PySpiffeClient(here.agent.address) as client:
        bundles = client.fetch_x509_bundles()
        bundle = bundles.get_bundle_for_trust_domain(PyTrustDomain(foreign.name))
        validated = client.validate_jwt_svid(token, f"aud-{side}")
    assert bundle is not None and bundle.x509_authorities
    assert {c.public_bytes(Encoding.DER) for c in bundle.x509_authorities} == here.foreign_roots(foreign)
    assert str(validated.spiffe_id) == there.workload_id


def test_bundle_show_prints_the_refresh_hint(pair: Pair) -> None:
    printed = json.loads(pair.b.server.cli("bundle", "show", "--format", "spiffe").stdout)
    assert printed["spiffe_refresh_hint"] == REFRESH_S
    assert all(k["use"] in ("x509-svid", "jwt-svid") for k in printed["keys"])


def test_update_to_a_dead_url_keeps_the_bundle_then_recovers(pair: Pair) -> None:
    shown = pair.a.server.cli_json("federation", "show", "--trust-domain", "b.test")
    roots = pair.a.foreign_roots(B)
    flags = ["--trust-domain", "b.test", "--bundle-endpoint-profile", "https_spiffe",
             "--endpoint-spiffe-id", "spiffe://b.test/spire/server"]
    dead = f"https://127.0.0.1:{free_port()}"
    updated = pair.a.server.cli_json("federation", "update", "--bundle-endpoint-url", dead, *flags)
    assert updated["bundle_endpoint_url"] == dead
    assert dead in updated["last_error"]  # the reply carries the first fetch's outcome
    assert pair.a.foreign_roots(B) == roots  # the last good bundle stays
    restored = asyncio.run(admin_call(pair.a.server, "UpdateFederationRelationship",
                                      admin_pb2.FederationRelationshipRequest(relationship=admin_pb2.FederationRelationship(
                                          trust_domain="b.test", bundle_endpoint_url=shown["bundle_endpoint_url"],
                                          bundle_endpoint_profile="https_spiffe",
                                          endpoint_spiffe_id="spiffe://b.test/spire/server"))))
    assert restored.last_error == "" and restored.last_refresh > 0


def test_ca_rotation_reaches_the_other_domain_within_one_refresh(pair: Pair) -> None:
    before = pair.a.foreign_roots(B)
    prepared = pair.b.server.cli_json("localauthority", "x509", "prepare")
    started = time.monotonic()
    new_roots = wait_for(lambda: pair.a.foreign_roots(B) - before or None, REFRESH_S + 10,
                         "b.test's prepared CA in a.test's workload")
    elapsed = time.monotonic() - started
    assert elapsed < REFRESH_S + 3, f"took {elapsed:.1f}s, more than one refresh ({REFRESH_S}s) and sync"
    assert len(new_roots) == 1 and len(prepared["authorities"]) == 2
    pair.b.server.cli_json("localauthority", "x509", "activate")
    # A new b.test workload gets its SVID from the new CA; a.test's workload trusts it already.
    pair.b.create_entry("spiffe://b.test/after-rotation", "a.test")
    fresh = wait_for(lambda: pair.b.svid("spiffe://b.test/after-rotation"), 20, "an SVID from the new CA")
    fresh.cert_chain[-1].verify_directly_issued_by(x509.load_der_x509_certificate(next(iter(new_roots))))
    assert mtls(pair.a.svid(pair.a.workload_id), pair.a, fresh, pair.b) == pair.a.workload_id


def test_stopping_the_foreign_server_keeps_mtls_on_the_last_good_bundle(pair: Pair) -> None:
    """b.test's server stays stopped from here on (its agent keeps serving cached SVIDs)."""
    roots = pair.a.foreign_roots(B)
    pair.b.server.stop()

    def refused() -> bool:
        shown = pair.a.server.cli_json("federation", "show", "--trust-domain", "b.test")
        return bool(shown["last_error"])

    wait_for(refused, REFRESH_S * 3, "a failed refresh of b.test")
    assert pair.a.foreign_roots(B) == roots
    check_mtls_both_ways(pair)
    refresh = pair.a.server.cli("federation", "refresh", "--trust-domain", "b.test", check=False)
    assert refresh.returncode == 1 and "FAILED_PRECONDITION" in refresh.stderr


def test_deleting_the_relationship_removes_the_bundle_from_workloads_within_a_second(pair: Pair) -> None:
    assert pair.a.foreign_roots(B)
    with pair.a.client() as client:
        updates = client.watch_x509_context()
        next(updates)  # the current state: b.test's bundle is there
        started = time.monotonic()
        asyncio.run(admin_call(pair.a.server, "DeleteFederationRelationship",
                               admin_pb2.FederationRelationshipId(trust_domain="b.test")))
        while True:
            ctx = next(updates)
            if not any(b.trust_domain == B for b in ctx.bundles.x509_bundles()):
                break
        elapsed = time.monotonic() - started
    assert pair.a.server.cli_json("federation", "list") == {"relationships": []}
    assert pair.a.server.cli("bundle", "list").stdout.strip() == ""
    assert elapsed < 1.0, f"removal took {elapsed:.2f}s"
    assert "DeleteFederationRelationship" in pair.a.server.cli("audit", "show").stdout


async def admin_call(server: ServerProc, method: str, request: Any) -> Any:
    """One admin API call over the server's socket, without a CLI process start."""
    channel = Channel(path=str(server.socket_path))
    try:
        return await getattr(AdminAPIStub(channel), method)(request)
    finally:
        channel.close()


def test_swapped_profiles_federate_too(tmp_path: Path) -> None:
    """a fetches b over https_web and b fetches a over https_spiffe: each direction under the other profile."""
    with federated_servers(tmp_path, a_to_b="https_web", b_to_a="https_spiffe") as (a_srv, b_srv, _root):
        for here, there, profile in ((a_srv, b_srv, "https_web"), (b_srv, a_srv, "https_spiffe")):
            def fetched(srv: ServerProc = here) -> Any:
                (rel,) = asyncio.run(admin_call(srv, "ListFederationRelationships",
                                                admin_pb2.ListFederationRelationshipsRequest())).relationships
                return rel if rel.last_refresh else None

            rel = wait_for(fetched, 30, f"{here.trust_domain} fetching {there.trust_domain}")
            assert (rel.trust_domain, rel.bundle_endpoint_profile, rel.last_error) == (there.trust_domain, profile, "")
            (held,) = asyncio.run(admin_call(here, "ListFederatedBundles",
                                             admin_pb2.ListFederatedBundlesRequest())).bundles
            assert bundle_from_proto(held) == own_bundle(there)


def own_bundle(server: ServerProc) -> SpiffeBundle:
    """The server's own bundle, over its admin socket (no CLI process start)."""
    return bundle_from_proto(asyncio.run(admin_call(server, "GetBundle", admin_pb2.GetBundleRequest())))

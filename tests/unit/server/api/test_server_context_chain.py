"""ServerContext.issued_chain_der: DER of the issued chain, its CA part cached per bundle and signing CA."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from spiffe_py.clock import ManualClock
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_server.api.context import ServerContext
from spiffe_server.api.convert import certs_to_der
from spiffe_server.ca.keys import KeyType, MemoryKeyManager, UpstreamAuthority, generate_key
from spiffe_server.ca.manager import AuthorityKind, CaConfig, CaManager, MemoryJournalStore
from spiffe_server.ca.templates import X509SvidParams
from spiffe_server.config import ServerConfig
from spiffe_server.datastore import open_datastore
from tests.support.ca import CA

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
TD = TrustDomain.parse("example.org")
WEB = SpiffeId.parse("spiffe://example.org/web")


def _ctx(tmp_path: Path, upstream: UpstreamAuthority | None = None) -> ServerContext:
    clock = ManualClock(NOW)
    ca = CaManager(CaConfig(trust_domain=TD), keys=MemoryKeyManager(), journal=MemoryJournalStore(), clock=clock,
                   upstream=upstream)
    return ServerContext(config=ServerConfig(trust_domain=TD), store=open_datastore(tmp_path / "db"), ca=ca,
                         clock=clock)


def _signed(ctx: ServerContext) -> list[bytes]:
    key = generate_key(KeyType.EC_P256)
    svid = ctx.ca.sign_x509_svid_der(X509SvidParams(spiffe_id=WEB, public_key=key.public_key()))
    der = ctx.issued_chain_der(svid)
    assert der == certs_to_der(ctx.issued_chain(svid.chain))  # same answer as the uncached path
    return der


def test_self_signed_ca_is_a_root_so_only_the_leaf_is_sent(tmp_path: Path) -> None:
    """X5 chain: bundle roots are never repeated in an issued chain."""
    ctx = _ctx(tmp_path)
    assert len(_signed(ctx)) == 1 and len(_signed(ctx)) == 1


def test_upstream_intermediate_follows_the_leaf_and_follows_rotation(tmp_path: Path) -> None:
    root = CA.create("example.org", now=NOW, ttl=timedelta(days=30))
    upstream = UpstreamAuthority(cert=root.cert, intermediates=(), key=root.key, roots=(root.cert,))
    ctx = _ctx(tmp_path, upstream)
    first_ca = ctx.ca.active_x509_ca().cert
    der = _signed(ctx)
    assert der[1:] == [first_ca.public_bytes(serialization.Encoding.DER)]
    ctx.ca.prepare(AuthorityKind.X509)
    ctx.ca.activate(AuthorityKind.X509)  # a new signing CA must never be answered from the old cache
    second_ca = ctx.ca.active_x509_ca().cert
    assert second_ca != first_ca
    assert _signed(ctx)[1:] == [second_ca.public_bytes(serialization.Encoding.DER)]

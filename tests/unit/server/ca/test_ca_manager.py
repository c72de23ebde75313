"""CaManager: slot rotation driven by a ManualClock, bundle sequence, restart, taint/revoke, signing."""

from __future__ import annotations

import logging
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from spiffe_py.clock import ManualClock
from spiffe_py.jwtsvid import JwtSvid
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_server.ca import slots as sl
from spiffe_server.ca.keys import DiskKeyManager, KeyType, MemoryKeyManager, UpstreamAuthority, generate_key
from spiffe_server.ca.manager import AuthorityKind, CaConfig, CaManager, MemoryJournalStore
from spiffe_server.ca.templates import JwtSvidParams, SvidPolicy, X509SvidParams
from spiffe_server.datastore import open_datastore
from spiffe_server.errors import CaUnavailableError, FailedPreconditionError, NotFoundError
from tests.support.ca import CA

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
TD = TrustDomain.parse("example.org")
WEB = SpiffeId.parse("spiffe://example.org/web")
X509, JWT = AuthorityKind.X509, AuthorityKind.JWT
TICK = timedelta(microseconds=1)
CheckSvid = Callable[..., SpiffeId]  # the check_svid fixture (conftest.py)


class Env:
    """A manager with a manual clock, in-memory journal and key manager, rebuilt on demand."""

    def __init__(self, config: CaConfig | None = None, keys: MemoryKeyManager | DiskKeyManager | None = None,
                 upstream: UpstreamAuthority | None = None) -> None:
        self.clock = ManualClock(NOW)
        self.journal = MemoryJournalStore()
        self.keys = keys or MemoryKeyManager()
        self.config = config or CaConfig(trust_domain=TD)
        self.upstream = upstream
        self.ca = self.restart()

    def restart(self) -> CaManager:
        self.ca = CaManager(self.config, keys=self.keys, journal=self.journal, clock=self.clock,
                            upstream=self.upstream)
        return self.ca

    def at(self, when: datetime) -> bool:
        self.clock.set(when)
        return self.ca.tick()

    def statuses(self, kind: AuthorityKind) -> list[sl.SlotStatus]:
        return [info.status for info in self.ca.authorities(kind)]

    def sequence(self) -> int:
        sequence = self.ca.bundle().sequence_number
        assert sequence is not None
        return sequence

    def issue(self, check_svid: CheckSvid, ttl: timedelta | None = None) -> tuple[x509.Certificate, ...]:
        key = generate_key(KeyType.EC_P256)
        chain = self.ca.sign_x509_svid(X509SvidParams(spiffe_id=WEB, public_key=key.public_key(), ttl=ttl))
        check_svid(chain, key, self.ca.bundle().x509_authorities, self.clock.now())
        return chain


def test_start_creates_active_x509_ca_and_jwt_key() -> None:
    env = Env()
    assert env.statuses(X509) == [sl.SlotStatus.ACTIVE] and env.statuses(JWT) == [sl.SlotStatus.ACTIVE]
    bundle = env.ca.bundle()
    assert bundle.x509_authorities == (env.ca.active_x509_ca().cert,)
    assert list(bundle.jwt_authorities) == [env.ca.active_jwt_key().kid]
    assert bundle.sequence_number == 1
    assert env.ca.active_x509_ca().cert.not_valid_after_utc == NOW + timedelta(hours=24)


def test_rotate_is_idempotent() -> None:
    env = Env()
    saved = env.journal.data
    assert env.ca.rotate(NOW) is False and env.ca.tick() is False
    assert env.journal.data == saved and env.sequence() == 1


def test_x509_prepare_exactly_at_half_life_and_published_at_once() -> None:
    env = Env()
    active = env.ca.authorities(X509)[0]
    half = sl.prepare_time(active)
    assert half == NOW + timedelta(hours=12) - timedelta(seconds=5)  # NotBefore is backdated 10 s
    assert env.at(half - TICK) is False and env.statuses(X509) == [sl.SlotStatus.ACTIVE]
    assert env.at(half) is True
    assert env.statuses(X509) == [sl.SlotStatus.ACTIVE, sl.SlotStatus.PREPARED]
    prepared = env.ca.authorities(X509)[1]
    assert len(env.ca.bundle().x509_authorities) == 2 and env.sequence() == 2
    assert env.ca.active_x509_ca().authority_id == active.authority_id  # not signing with it yet
    assert prepared.authority_id != active.authority_id


def test_jwt_prepare_and_activate_exactly_at_half_and_five_sixths() -> None:
    env = Env()
    first_kid = env.ca.active_jwt_key().kid
    assert env.at(NOW + timedelta(hours=12) - TICK) is True  # the x509 CA prepared 5 s earlier
    assert env.statuses(JWT) == [sl.SlotStatus.ACTIVE]
    assert env.at(NOW + timedelta(hours=12)) is True
    assert env.statuses(JWT) == [sl.SlotStatus.ACTIVE, sl.SlotStatus.PREPARED]
    new_kid = env.ca.authorities(JWT)[1].authority_id
    assert set(env.ca.bundle().jwt_authorities) == {first_kid, new_kid}
    assert env.at(NOW + timedelta(hours=20) - TICK) is False and env.ca.active_jwt_key().kid == first_kid
    sequence = env.sequence()
    assert env.at(NOW + timedelta(hours=20)) is False  # activation does not change the bundle
    assert env.ca.active_jwt_key().kid == new_kid and env.sequence() == sequence
    assert env.statuses(JWT) == [sl.SlotStatus.OLD, sl.SlotStatus.ACTIVE]


def test_next_ca_is_in_bundle_before_it_signs(check_svid: CheckSvid) -> None:
    env = Env()
    first = env.ca.active_x509_ca()
    env.at(sl.prepare_time(env.ca.authorities(X509)[0]))
    bundle_at_prepare = env.ca.bundle()
    assert env.issue(check_svid)[1] == first.cert
    env.at(sl.activate_time(env.ca.authorities(X509)[0]))
    second = env.ca.active_x509_ca()
    assert second.cert != first.cert
    assert second.cert in bundle_at_prepare.x509_authorities
    key = generate_key(KeyType.EC_P256)
    chain = env.ca.sign_x509_svid(X509SvidParams(spiffe_id=WEB, public_key=key.public_key()))
    assert chain[1] == second.cert
    check_svid(chain, key, bundle_at_prepare.x509_authorities, env.clock.now())  # old bundles trust it


def test_expired_authorities_are_pruned_after_grace() -> None:
    env = Env(CaConfig(trust_domain=TD, bundle_prune_grace=timedelta(hours=1)))
    first = env.ca.authorities(X509)[0]
    env.at(NOW + timedelta(hours=23))  # prepared, activated; first is old now
    assert first.authority_id in [a.authority_id for a in env.ca.authorities(X509)]
    env.at(NOW + timedelta(hours=25) - TICK)
    assert first.authority_id in [a.authority_id for a in env.ca.authorities(X509)]
    before = env.sequence()
    assert env.at(NOW + timedelta(hours=25)) is True
    assert first.authority_id not in [a.authority_id for a in env.ca.authorities(X509)]
    assert first.not_after + timedelta(hours=1) == NOW + timedelta(hours=25)
    assert env.sequence() == before + 1


def test_sequence_increments_on_every_bundle_change() -> None:
    env = Env()
    seen = [env.sequence()]
    for hours in range(1, 73):
        changed = env.at(NOW + timedelta(hours=hours))
        seen.append(env.sequence())
        assert (seen[-1] == seen[-2] + 1) if changed else (seen[-1] == seen[-2])
    assert seen[-1] > 6  # three days of 24h CAs: several prepares and prunes


def test_svid_not_after_capped_at_ca_not_after(check_svid: CheckSvid) -> None:
    env = Env(CaConfig(trust_domain=TD, ca_ttl=timedelta(hours=1)))
    assert any("default_x509_svid_ttl" in w for w in env.ca.warnings)
    chain = env.issue(check_svid, ttl=timedelta(hours=3))
    ca_not_after = env.ca.active_x509_ca().cert.not_valid_after_utc
    assert chain[0].not_valid_after_utc == ca_not_after == NOW + timedelta(hours=1)


def test_no_warnings_for_default_ttls() -> None:
    assert Env().ca.warnings == ()


def test_signing_refused_when_active_ca_expired_without_tick() -> None:
    env = Env()
    env.clock.set(NOW + timedelta(hours=24))
    with pytest.raises(CaUnavailableError, match=r"^ca: no active x509 authority$"):
        env.ca.sign_x509_svid(X509SvidParams(spiffe_id=WEB, public_key=generate_key(KeyType.EC_P256).public_key()))
    with pytest.raises(CaUnavailableError, match=r"^ca: no active jwt authority$"):
        env.ca.sign_jwt_svid(JwtSvidParams(spiffe_id=WEB, audience=("db",)))


def test_restart_keeps_same_ca_and_keys_0600(tmp_path: Path, check_svid: CheckSvid) -> None:
    env = Env(keys=DiskKeyManager(tmp_path / "keys"))
    root = env.ca.bundle().x509_authorities[0].fingerprint(hashes.SHA256())
    kid, sequence = env.ca.active_jwt_key().kid, env.sequence()
    env.keys = DiskKeyManager(tmp_path / "keys")
    env.restart()
    assert env.ca.bundle().x509_authorities[0].fingerprint(hashes.SHA256()) == root
    assert env.ca.active_jwt_key().kid == kid and env.sequence() == sequence
    env.issue(check_svid)
    files = sorted((tmp_path / "keys").iterdir())
    assert len(files) == 2
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)


def test_restart_with_sqlite_datastore_journal(tmp_path: Path, check_svid: CheckSvid) -> None:
    """The real datastore implements CaJournalStore; a new manager on the same file resumes the same CA."""
    clock, config = ManualClock(NOW), CaConfig(trust_domain=TD)
    store = open_datastore(tmp_path / "datastore.sqlite")
    try:
        first = CaManager(config, keys=DiskKeyManager(tmp_path / "keys"), journal=store, clock=clock)
        first_bundle = first.bundle()
    finally:
        store.close()
    store = open_datastore(tmp_path / "datastore.sqlite")
    try:
        second = CaManager(config, keys=DiskKeyManager(tmp_path / "keys"), journal=store, clock=clock)
        assert second.bundle() == first_bundle
        key = generate_key(KeyType.EC_P256)
        chain = second.sign_x509_svid(X509SvidParams(spiffe_id=WEB, public_key=key.public_key()))
        check_svid(chain, key, first_bundle.x509_authorities, NOW)
    finally:
        store.close()


def test_journal_holds_no_private_key_material(tmp_path: Path) -> None:
    env = Env(keys=DiskKeyManager(tmp_path))
    assert env.journal.data is not None and b"PRIVATE KEY" not in env.journal.data
    for path in tmp_path.iterdir():
        body = b"".join(path.read_bytes().splitlines()[1:-1])
        assert body[:40] not in env.journal.data


def test_lost_key_drops_its_authority_and_mints_a_new_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    env = Env(keys=DiskKeyManager(tmp_path))
    old_root, sequence = env.ca.active_x509_ca().cert, env.sequence()
    for path in tmp_path.glob("x509-*.pem"):
        path.unlink()
    with caplog.at_level(logging.WARNING, logger="spiffe_server.ca.manager"):
        env.restart()
    assert "has no key; dropping it" in caplog.text
    assert env.ca.bundle().x509_authorities == (env.ca.active_x509_ca().cert,)
    assert env.ca.active_x509_ca().cert != old_root and env.sequence() == sequence + 1


def test_corrupt_journal_is_refused() -> None:
    env = Env()
    env.journal.data = b'{"version": 99}'
    with pytest.raises(ValueError, match="unsupported journal version 99"):
        env.restart()
    env.journal.data = b"{not json"
    with pytest.raises(ValueError, match=r"^ca: journal is corrupt"):
        env.restart()


@pytest.mark.parametrize("kind", [X509, JWT])
def test_forced_prepare_activate_taint_revoke(tmp_path: Path, kind: AuthorityKind) -> None:
    env = Env(keys=DiskKeyManager(tmp_path))
    old = env.ca.authorities(kind)[0].authority_id
    with pytest.raises(FailedPreconditionError, match="no prepared authority to activate"):
        env.ca.activate(kind)
    prepared = env.ca.prepare(kind)
    assert prepared.status is sl.SlotStatus.PREPARED and env.sequence() == 2
    assert env.ca.activate(kind).authority_id == prepared.authority_id and env.sequence() == 2
    with pytest.raises(FailedPreconditionError, match="must be tainted before it is revoked"):
        env.ca.revoke(kind, old)
    with pytest.raises(FailedPreconditionError, match="only an old authority can be tainted"):
        env.ca.taint(kind, prepared.authority_id)
    env.ca.taint(kind, old)
    assert [a.tainted for a in env.ca.authorities(kind)] == [True, False] and env.sequence() == 3
    assert len(list(tmp_path.glob(f"{kind.value}-*.pem"))) == 2
    env.ca.revoke(kind, old)
    assert [a.authority_id for a in env.ca.authorities(kind)] == [prepared.authority_id] and env.sequence() == 4
    assert len(list(tmp_path.glob(f"{kind.value}-*.pem"))) == 1  # the revoked key is gone
    bundle = env.ca.bundle()
    if kind is JWT:
        assert list(bundle.jwt_authorities) == [prepared.authority_id]
    else:
        assert bundle.x509_authorities == (env.ca.active_x509_ca().cert,)
    with pytest.raises(NotFoundError, match="no authority with id"):
        env.ca.taint(kind, old)


def test_taint_survives_restart() -> None:
    env = Env()
    old = env.ca.authorities(X509)[0].authority_id
    env.ca.prepare(X509)
    env.ca.activate(X509)
    env.ca.taint(X509, old)
    env.restart()
    assert (env.ca.authorities(X509)[0].authority_id, env.ca.authorities(X509)[0].tainted) == (old, True)


def test_upstream_authority_makes_ca_an_intermediate(check_svid: CheckSvid) -> None:
    root = CA.create("example.org", now=NOW, ttl=timedelta(days=30))
    upstream = UpstreamAuthority(cert=root.cert, intermediates=(), key=root.key, roots=(root.cert,))
    env = Env(upstream=upstream)
    assert env.ca.bundle().x509_authorities == (root.cert,)
    chain = env.issue(check_svid)
    assert chain[1] == env.ca.active_x509_ca().cert and chain[1].issuer == root.cert.subject
    sequence = env.sequence()
    env.at(NOW + timedelta(hours=21))  # server CA prepared and activated: the bundle root stays
    assert env.ca.active_x509_ca().cert != chain[1]
    assert env.ca.bundle().x509_authorities == (root.cert,)
    env.issue(check_svid)
    assert env.sequence() == sequence + 1  # only the JWT key publication changed the bundle


def test_jwt_svid_signed_with_active_key_and_capped_at_key_expiry() -> None:
    env = Env(CaConfig(trust_domain=TD, ca_ttl=timedelta(hours=1),
                       policy=SvidPolicy(jwt_issuer="https://issuer.example")))
    token = env.ca.sign_jwt_svid(JwtSvidParams(spiffe_id=WEB, audience=("db",), ttl=timedelta(hours=2)))
    svid = JwtSvid.parse_and_validate(token, env.ca.bundle().jwt_bundle(), "db", now=NOW)
    assert svid.spiffe_id == WEB
    assert svid.expiry == env.ca.active_jwt_key().not_after == NOW + timedelta(hours=1)
    assert svid.claims["iss"] == "https://issuer.example"


def test_jwt_key_type_can_differ_from_ca_key_type() -> None:
    env = Env(CaConfig(trust_domain=TD, ca_key_type=KeyType.EC_P384, jwt_key_type=KeyType.RSA_2048))
    assert env.ca.active_x509_ca().key.key_size == 384
    assert env.ca.active_jwt_key().key.key_size == 2048


@pytest.mark.parametrize(("ca_ttl", "hint"), [
    (timedelta(hours=24), timedelta(minutes=5)),
    (timedelta(minutes=10), timedelta(minutes=1)),
    (timedelta(seconds=30), timedelta(seconds=3)),
    (timedelta(seconds=5), timedelta(seconds=1)),
])
def test_bundle_carries_a_refresh_hint_tdb05(ca_ttl: timedelta, hint: timedelta) -> None:
    """TDB-05: the server's bundle sets spiffe_refresh_hint (integer seconds), about ca_ttl/10 within 1 s..5 min."""
    env = Env(CaConfig(trust_domain=TD, ca_ttl=ca_ttl))
    bundle = env.ca.bundle()
    assert bundle.refresh_hint == hint
    assert b'"spiffe_refresh_hint":%d' % int(hint.total_seconds()) in bundle.to_json()
    fixed = Env(CaConfig(trust_domain=TD, refresh_hint=timedelta(seconds=42))).ca.bundle()
    assert fixed.refresh_hint == timedelta(seconds=42)

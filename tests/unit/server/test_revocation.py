"""Revocation rules, CRLs, the issuance log and pruning with an injected clock (issue 5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status

from spiffe_py._proto.spiffepy.server.v1 import types_pb2
from spiffe_py.clock import ManualClock
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_server.api.errors import status_for
from spiffe_server.api.sync import SyncState
from spiffe_server.ca.signer import X509Authority, sign_ca, sign_x509_svid
from spiffe_server.ca.templates import SvidPolicy, X509SvidParams
from spiffe_server.datastore import Issuance, LimitExceededError, Revocation, RevocationKind
from spiffe_server.datastore.sqlite import open_sqlite
from spiffe_server.revocation import (
    RevocationRequestError,
    build_crls,
    check_jti,
    check_reason,
    jwt_issuance,
    live,
    parse_serial,
    revocations_for,
    x509_issuance,
)

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
TD = TrustDomain.parse("example.org")
WEB = SpiffeId.parse("spiffe://example.org/web")


def _ca() -> X509Authority:
    return sign_ca(trust_domain=TD, key=ec.generate_private_key(ec.SECP256R1()), ttl=timedelta(days=1), now=NOW)


def _leaf(ca: X509Authority, ttl: timedelta = timedelta(hours=1)) -> x509.Certificate:
    params = X509SvidParams(spiffe_id=WEB, public_key=ec.generate_private_key(ec.SECP256R1()).public_key(), ttl=ttl)
    return sign_x509_svid(ca, params, policy=SvidPolicy(), now=NOW)[0]


def _rev(value: str, *, issuer: str = "", kind: RevocationKind = RevocationKind.SERIAL,
         expires: timedelta = timedelta(hours=1)) -> Revocation:
    return Revocation(kind=kind, value=value, revoked_at=NOW, expires_at=NOW + expires, issuer=issuer)


@pytest.mark.parametrize(("text", "canonical"), [
    ("ABCDEF", "abcdef"), ("0x00ff", "ff"), ("0a:1B:2c", "a1b2c"), (" 42 ", "42"), ("f" * 40, "f" * 40)])
def test_parse_serial_canonical_form(text: str, canonical: str) -> None:
    assert parse_serial(text) == canonical


@pytest.mark.parametrize(("text", "message"), [
    ("", r"serial must be 1\.\.40 hex digits"), ("xyz", "got 'xyz'"), ("f" * 41, r"1\.\.40 hex digits"),
    ("0", "serial must not be zero"), ("12 34", "hex digits")])
def test_parse_serial_refuses_bad_input(text: str, message: str) -> None:
    with pytest.raises(RevocationRequestError, match=message) as exc:
        parse_serial(text)
    assert status_for(exc.value) is Status.INVALID_ARGUMENT


def test_jti_and_reason_bounds() -> None:
    assert check_jti("abc-_123") == "abc-_123"
    for bad in ("", "a b", "x" * 257, "é"):
        with pytest.raises(RevocationRequestError, match=r"jti must be 1\.\.256 printable"):
            check_jti(bad)
    assert check_reason("") == "" and check_reason("incident 42") == "incident 42"
    for bad in ("x" * 257, "line\nbreak", "nul\x00"):
        with pytest.raises(RevocationRequestError, match="reason must be at most 256"):
            check_reason(bad)


def test_issuance_records_name_serial_issuer_and_expiry() -> None:
    ca = _ca()
    leaf = _leaf(ca)
    item = x509_issuance(leaf, spiffe_id=str(WEB), entry_id="e1", agent_id="a1")
    assert (item.kind, item.value) == (RevocationKind.SERIAL, f"{leaf.serial_number:x}")
    assert item.issuer == ca.authority_id and item.expires_at == leaf.not_valid_after_utc
    jwt = jwt_issuance({"jti": "j1", "sub": str(WEB), "exp": int((NOW + timedelta(minutes=5)).timestamp())},
                       entry_id="e1", agent_id="a1")
    assert (jwt.kind, jwt.value, jwt.spiffe_id, jwt.issuer) == (RevocationKind.JTI, "j1", str(WEB), "")
    assert jwt.expires_at == NOW + timedelta(minutes=5)


def test_revocations_skip_expired_svids_and_live_prunes_with_the_clock() -> None:
    fresh = Issuance(kind=RevocationKind.JTI, value="a", spiffe_id=str(WEB), expires_at=NOW + timedelta(minutes=5))
    stale = Issuance(kind=RevocationKind.JTI, value="b", spiffe_id=str(WEB), expires_at=NOW)
    (rev,) = revocations_for([fresh, stale], reason="r", now=NOW)
    assert (rev.value, rev.reason, rev.revoked_at, rev.expires_at) == ("a", "r", NOW, NOW + timedelta(minutes=5))
    assert live([rev], now=NOW + timedelta(minutes=4)) == (rev,)
    assert live([rev], now=NOW + timedelta(minutes=5)) == ()


def test_one_crl_per_issuing_ca_signed_by_it_listing_unexpired_serials() -> None:
    """X.509 revocation: CRL signed by the CA that issued the serial (RFC 5280 §5, AKI + CRL number)."""
    ca, idle = _ca(), _ca()
    gone, kept = _leaf(ca), _leaf(ca)
    revs = [
        _rev(f"{kept.serial_number:x}", issuer=ca.authority_id),
        _rev(f"{gone.serial_number:x}", issuer=ca.authority_id, expires=timedelta(0)),  # expired: left out
        _rev("j1", kind=RevocationKind.JTI),  # JWTs never reach a CRL
        _rev("abc", issuer="not-one-of-ours"),
    ]
    (der,) = build_crls(revs, [idle, ca], now=NOW, number=7)
    crl = x509.load_der_x509_crl(der)
    assert crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
    assert not crl.is_signature_valid(idle.cert.public_key())  # type: ignore[arg-type]
    assert crl.issuer == ca.cert.subject and [r.serial_number for r in crl] == [kept.serial_number]
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    assert aki is not None and aki.hex() == ca.authority_id
    assert crl.next_update_utc == NOW + timedelta(hours=1)
    assert build_crls(revs[1:3], [ca], now=NOW, number=8) == ()


def test_store_prunes_revocations_and_issuances_as_svids_expire(tmp_path: Path) -> None:
    store = open_sqlite(tmp_path / "db.sqlite3", max_revocations=3)
    clock = ManualClock(NOW)
    short = Issuance(kind=RevocationKind.SERIAL, value="a1", spiffe_id=str(WEB), entry_id="e", agent_id="ag",
                     expires_at=NOW + timedelta(minutes=1))
    long = Issuance(kind=RevocationKind.JTI, value="j1", spiffe_id=str(WEB), entry_id="e", agent_id="ag",
                    expires_at=NOW + timedelta(minutes=10))
    store.record_issuances([short, long])
    assert store.get_issuance(RevocationKind.SERIAL, "a1") == short
    assert store.list_issuances(now=clock.now(), entry_id="e") == (long, short)  # by kind, then value
    revs = revocations_for([short, long], reason="r", now=clock.now())
    seq = store.change_seq()
    assert store.add_revocations(revs) == revs and store.change_seq() == seq + 1  # pushed to other servers
    assert store.add_revocations(revs) == () and store.change_seq() == seq + 1  # idempotent, no news
    clock.advance(timedelta(minutes=2))
    assert [r.value for r in store.list_revocations(now=clock.now())] == ["j1"]
    assert store.list_issuances(now=clock.now(), agent_id="ag") == (long,)
    assert store.prune_revocations(now=clock.now()) == 1 and store.count_revocations() == 1
    assert store.prune_issuances(now=clock.now()) == 1
    more = [_rev(f"b{i}", expires=timedelta(hours=1)) for i in range(3)]
    with pytest.raises(LimitExceededError, match="revocation list is full"):
        store.add_revocations(more)  # bounded: all or nothing
    assert store.count_revocations() == 1
    store.close()


def test_sync_plan_sends_all_revocations_first_then_additions_and_crl_changes() -> None:
    bundle = types_pb2.Bundle(sequence_number=1)
    a, b = types_pb2.Revocation(kind="jwt", value="a"), types_pb2.Revocation(kind="x509", value="b")
    state = SyncState()
    (first,) = state.plan({}, bundle, [], revocations=[a], crls=[])
    assert first.full and list(first.revocations) == [a] and first.HasField("crls") and not first.crls.crls
    assert state.plan({}, bundle, [], revocations=[a], crls=[]) == []
    (update,) = state.plan({}, bundle, [], revocations=[a, b], crls=[b"crl"])
    assert not update.full and list(update.revocations) == [b] and list(update.crls.crls) == [b"crl"]
    (cleared,) = state.plan({}, bundle, [], revocations=[b], crls=[])
    assert not cleared.revocations and cleared.HasField("crls") and not cleared.crls.crls  # every CRL gone

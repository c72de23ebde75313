"""Interop with py-spiffe (the ``spiffe`` package): it accepts what we emit, we accept what it emits."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import spiffe
from cryptography.hazmat.primitives import serialization

from spiffe_py.bundle import JwtBundle, X509Bundle
from spiffe_py.jwtsvid import sign_jwt_svid
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_py.x509svid import X509Svid
from tests.support.ca import CA, KeyType, generate_key

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TD = TrustDomain.parse("example.org")
THEIR_TD = spiffe.TrustDomain("example.org")
ROOT = CA.create(TD, now=NOW)
MID = ROOT.child_ca()
ID = "spiffe://example.org/ns/prod/web"
FAR_EXP = 4102444800  # 2100-01-01: py-spiffe checks exp against the wall clock


def _spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_py_spiffe_parses_our_x509_bundle_pem_and_der() -> None:
    ours = X509Bundle(TD, (ROOT.cert, CA.create(TD, now=NOW).cert))
    assert spiffe.X509Bundle.parse(THEIR_TD, ours.to_pem()).x509_authorities == set(ours.authorities)
    assert spiffe.X509Bundle.parse_raw(THEIR_TD, ours.to_der()).x509_authorities == set(ours.authorities)


def test_py_spiffe_parses_our_jwt_bundle_jwks() -> None:
    keys = {kind: generate_key(kind) for kind in ("ec-p256", "ec-p384", "ec-p521", "rsa-2048")}
    ours = JwtBundle(TD, {kid: key.public_key() for kid, key in keys.items()})
    theirs = spiffe.JwtBundle.parse(THEIR_TD, ours.to_jwks())
    assert {kid: _spki(key) for kid, key in theirs.jwt_authorities.items()} == {
        kid: _spki(key) for kid, key in ours.authorities.items()
    }


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048"])
def test_py_spiffe_parses_our_x509_svid(key_type: KeyType) -> None:
    ours = X509Svid.parse(*_pair(MID, key_type))
    for parse, chain, key in (
        (spiffe.X509Svid.parse, ours.chain_pem(), ours.key_pem()),
        (spiffe.X509Svid.parse_raw, ours.chain_der(), ours.key_der()),
    ):
        theirs = parse(chain, key)
        assert str(theirs.spiffe_id) == ID
        assert theirs.cert_chain == list(ours.cert_chain)
        assert _spki(theirs.private_key.public_key()) == _spki(ours.private_key.public_key())


def _pair(ca: CA, key_type: KeyType) -> tuple[bytes, bytes]:
    issued = ca.issue_svid(ID, key_type=key_type)
    return issued.chain_pem(), issued.key_pem()


@pytest.mark.parametrize("encoding", [serialization.Encoding.PEM, serialization.Encoding.DER])
def test_we_parse_x509_svid_and_bundle_saved_by_py_spiffe(tmp_path: Path, encoding: serialization.Encoding) -> None:
    issued = MID.issue_svid(ID)
    theirs = spiffe.X509Svid.parse_raw(issued.chain_der(), issued.key_der())
    theirs.save(tmp_path / "chain", tmp_path / "key", encoding)
    ours = X509Svid.parse((tmp_path / "chain").read_bytes(), (tmp_path / "key").read_bytes())
    assert ours.spiffe_id == SpiffeId.parse(ID)
    assert ours.cert_chain == issued.chain

    spiffe.X509Bundle(THEIR_TD, {ROOT.cert}).save(tmp_path / "bundle", encoding)
    parse = X509Bundle.parse_pem if encoding is serialization.Encoding.PEM else X509Bundle.parse_der
    assert parse(TD, (tmp_path / "bundle").read_bytes()).authorities == (ROOT.cert,)


def test_py_spiffe_validates_our_jwt_svid() -> None:
    key = ROOT.jwt_signing_key()
    token = sign_jwt_svid({"sub": ID, "aud": ["spiffe://example.org/db"], "exp": FAR_EXP}, key, ROOT.jwt_kid)
    their_bundle = spiffe.JwtBundle.parse(THEIR_TD, ROOT.jwt_bundle().to_jwks())
    svid = spiffe.JwtSvid.parse_and_validate(token, their_bundle, {"spiffe://example.org/db"})
    assert str(svid.spiffe_id) == ID
    assert svid.expiry == FAR_EXP


def test_py_spiffe_rejects_what_we_reject_uppercase_scheme_differs() -> None:
    """ID-19: py-spiffe lowercases an uppercase trust domain; we reject it (documented deviation)."""
    assert str(spiffe.SpiffeId("spiffe://EXAMPLE.org/a")) == "spiffe://example.org/a"
    with pytest.raises(ValueError, match="trust domain characters"):
        SpiffeId.parse("spiffe://EXAMPLE.org/a")

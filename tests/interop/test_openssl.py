"""Interop with ``openssl verify``: chains minted by tests/support/ca.py are valid X.509 to OpenSSL too."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from spiffe_py.bundle import BundleSet
from spiffe_py.errors import RevokedError
from spiffe_py.x509svid import verify_x509_svid
from tests.support.ca import CA, Issued, generate_key

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ROOT = CA.create("example.org", now=NOW)
MID = ROOT.child_ca()
ID = "spiffe://example.org/web"


def _openssl_verify(tmp_path: Path, issued: Issued, *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "root.pem").write_bytes(ROOT.x509_bundle().to_pem())
    (tmp_path / "leaf.pem").write_bytes(issued.leaf.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "untrusted.pem").write_bytes(Issued(issued.chain[1:], issued.key).chain_pem())
    args = ["openssl", "verify", "-x509_strict", "-attime", str(int(NOW.timestamp())), "-CAfile", "root.pem"]
    if len(issued.chain) > 1:
        args += ["-untrusted", "untrusted.pem"]
    return subprocess.run([*args, *extra, "leaf.pem"], cwd=tmp_path, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("purpose", ["sslclient", "sslserver"])
@pytest.mark.parametrize("depth", [0, 1, 2])
def test_openssl_accepts_minted_chain(tmp_path: Path, purpose: str, depth: int) -> None:
    """X5-13/X5-16: a leaf with serverAuth+clientAuth verifies for both purposes, with 0..2 intermediates."""
    ca = ROOT
    for _ in range(depth):
        ca = ca.child_ca()
    result = _openssl_verify(tmp_path, ca.issue_svid(ID), "-purpose", purpose)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "leaf.pem: OK"


def test_openssl_rejects_bad_signature(tmp_path: Path) -> None:
    """The check is real: a leaf signed by the wrong key fails in OpenSSL as in our verifier."""
    result = _openssl_verify(tmp_path, MID.issue_svid(ID, signer_key=generate_key()))
    assert result.returncode != 0
    assert "signature failure" in result.stdout + result.stderr


def test_openssl_and_we_agree_on_crl_revocation(tmp_path: Path) -> None:
    issued = MID.issue_svid(ID)
    crl = MID.crl([issued.leaf])
    (tmp_path / "crl.pem").write_bytes(
        crl.public_bytes(serialization.Encoding.PEM) + ROOT.crl([]).public_bytes(serialization.Encoding.PEM)
    )
    result = _openssl_verify(tmp_path, issued, "-crl_check_all", "-CRLfile", "crl.pem")
    assert result.returncode != 0
    assert "certificate revoked" in result.stdout + result.stderr
    with pytest.raises(RevokedError):
        verify_x509_svid(issued.chain, BundleSet.of(ROOT.x509_bundle()), now=NOW, crls=[crl])

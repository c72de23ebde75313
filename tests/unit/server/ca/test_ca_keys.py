"""Key managers (disk keys are PKCS#8 PEM, 0600) and the disk upstream authority."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from spiffe_py import _pem
from spiffe_server.ca.keys import DiskKeyManager, KeyType, MemoryKeyManager, load_upstream_authority
from spiffe_server.errors import NotFoundError
from tests.support.ca import CA

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_disk_key_manager_persists_pkcs8_with_mode_0600(tmp_path: Path) -> None:
    keys = DiskKeyManager(tmp_path / "keys")
    key = keys.generate("x509-abc", KeyType.EC_P256)
    path = tmp_path / "keys" / "x509-abc.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert DiskKeyManager(tmp_path / "keys").get("x509-abc").public_key() == key.public_key()


def test_disk_key_manager_delete_and_missing(tmp_path: Path) -> None:
    keys = DiskKeyManager(tmp_path)
    keys.generate("k1", KeyType.EC_P256)
    keys.delete("k1")
    keys.delete("k1")  # already gone: no error
    with pytest.raises(NotFoundError, match="no key with id 'k1'"):
        keys.get("k1")


@pytest.mark.parametrize("key_id", ["", "../evil", "a/b", "x" * 129])
def test_key_ids_are_restricted(tmp_path: Path, key_id: str) -> None:
    with pytest.raises(ValueError, match="key id must match"):
        DiskKeyManager(tmp_path).generate(key_id, KeyType.EC_P256)


def test_disk_key_manager_refuses_garbage_file(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_bytes(b"not a key")
    with pytest.raises(ValueError, match=r"^keys: key file"):
        DiskKeyManager(tmp_path).get("bad")


@pytest.mark.parametrize(("key_type", "check"), [
    (KeyType.EC_P256, lambda k: isinstance(k, ec.EllipticCurvePrivateKey) and k.curve.name == "secp256r1"),
    (KeyType.EC_P384, lambda k: isinstance(k, ec.EllipticCurvePrivateKey) and k.curve.name == "secp384r1"),
    (KeyType.RSA_2048, lambda k: isinstance(k, rsa.RSAPrivateKey) and k.key_size == 2048),
])
def test_memory_key_manager_key_types(key_type: KeyType, check: object) -> None:
    keys = MemoryKeyManager()
    key = keys.generate("k", key_type)
    assert callable(check) and check(key)
    assert keys.get("k") is key
    keys.delete("k")
    with pytest.raises(NotFoundError):
        keys.get("k")


def write_pem(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_load_upstream_self_signed(tmp_path: Path) -> None:
    root = CA.create("example.org", now=NOW)
    upstream = load_upstream_authority(write_pem(tmp_path, "ca.pem", _pem.certificates_to_pem([root.cert])),
                                       write_pem(tmp_path, "ca.key", _pem.private_key_to_pem(root.key)))
    assert upstream.roots == (root.cert,) and upstream.intermediates == ()


def test_load_upstream_intermediate_needs_bundle(tmp_path: Path) -> None:
    root = CA.create("example.org", now=NOW)
    mid = root.child_ca()
    cert = write_pem(tmp_path, "mid.pem", _pem.certificates_to_pem([mid.cert]))
    key = write_pem(tmp_path, "mid.key", _pem.private_key_to_pem(mid.key))
    with pytest.raises(ValueError, match="not self-signed; give bundle_path"):
        load_upstream_authority(cert, key)
    bundle = write_pem(tmp_path, "root.pem", _pem.certificates_to_pem([root.cert]))
    upstream = load_upstream_authority(cert, key, bundle)
    assert upstream.cert == mid.cert and upstream.roots == (root.cert,)


def test_load_upstream_refuses_mismatched_key(tmp_path: Path) -> None:
    root, other = CA.create("example.org", now=NOW), CA.create("example.org", now=NOW)
    with pytest.raises(ValueError, match="key does not match its certificate"):
        load_upstream_authority(write_pem(tmp_path, "ca.pem", _pem.certificates_to_pem([root.cert])),
                                write_pem(tmp_path, "ca.key", _pem.private_key_to_pem(other.key)))

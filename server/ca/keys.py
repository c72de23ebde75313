"""Where CA and JWT private keys live (I/O shell), plus the disk upstream authority.

Keys are addressed by an opaque ``key_id``; the CA journal stores only that id::

    keys = DiskKeyManager(data_dir / "keys")
    key = keys.generate("x509-ca-1f2e", KeyType.EC_P256)   # written 0600 as PKCS#8 PEM
    assert keys.get("x509-ca-1f2e").public_key() == key.public_key()
    upstream = load_upstream_authority(cert_path, key_path)  # server CA becomes an intermediate
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from spiffe_py._pem import DecodeError, SigningKey, certificates_from_pem, private_key_from_any, private_key_to_pem
from spiffe_py.fsutil import write_private
from spiffe_server.errors import NotFoundError

CaPrivateKey = SigningKey

_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class KeyType(enum.Enum):
    """Supported CA / JWT key types (SPIRE `ca_key_type` names)."""

    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"


def generate_key(key_type: KeyType) -> CaPrivateKey:
    """A fresh private key of ``key_type``."""
    if key_type is KeyType.RSA_2048:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    curve = ec.SECP384R1() if key_type is KeyType.EC_P384 else ec.SECP256R1()
    return ec.generate_private_key(curve)


def _load_key(data: bytes, what: str) -> CaPrivateKey:
    try:
        return private_key_from_any(data)
    except DecodeError as err:
        raise ValueError(f"keys: {what}: {err}") from err


def _check_key_id(key_id: str) -> None:
    if not _KEY_ID.fullmatch(key_id):
        raise ValueError(f"keys: key id must match {_KEY_ID.pattern}: {key_id!r}")


class KeyManager(Protocol):
    """Creates, finds and forgets CA private keys by id."""

    def generate(self, key_id: str, key_type: KeyType) -> CaPrivateKey:
        """Create (or replace) the key ``key_id`` and keep it."""
        ...

    def get(self, key_id: str) -> CaPrivateKey:
        """The key ``key_id``; raises NotFoundError if unknown."""
        ...

    def delete(self, key_id: str) -> None:
        """Forget ``key_id`` (no error if already gone)."""
        ...


class MemoryKeyManager:
    """Keys held in process memory only (tests, or a deliberately ephemeral CA)."""

    def __init__(self) -> None:
        self._keys: dict[str, CaPrivateKey] = {}

    def generate(self, key_id: str, key_type: KeyType) -> CaPrivateKey:
        """Create and keep a key."""
        _check_key_id(key_id)
        self._keys[key_id] = key = generate_key(key_type)
        return key

    def get(self, key_id: str) -> CaPrivateKey:
        """The key ``key_id``."""
        try:
            return self._keys[key_id]
        except KeyError:
            raise NotFoundError(f"keys: no key with id {key_id!r}") from None

    def delete(self, key_id: str) -> None:
        """Forget a key."""
        self._keys.pop(key_id, None)


class DiskKeyManager:
    """Keys as PKCS#8 PEM files ``<directory>/<key_id>.pem`` (0600, directory 0700)."""

    def __init__(self, directory: str | Path) -> None:
        self._dir = Path(directory)

    def _path(self, key_id: str) -> Path:
        _check_key_id(key_id)
        return self._dir / f"{key_id}.pem"

    def generate(self, key_id: str, key_type: KeyType) -> CaPrivateKey:
        """Create a key and write it to disk before returning it."""
        path = self._path(key_id)
        key = generate_key(key_type)
        write_private(path, private_key_to_pem(key))
        return key

    def get(self, key_id: str) -> CaPrivateKey:
        """Read ``key_id`` from disk."""
        path = self._path(key_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"keys: no key with id {key_id!r}") from None
        return _load_key(data, f"key file {str(path)!r}")

    def delete(self, key_id: str) -> None:
        """Remove the key file."""
        self._path(key_id).unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class UpstreamAuthority:
    """A CA that signs our server CA: its cert, intermediates up to the roots, key and roots."""

    cert: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]
    key: CaPrivateKey
    roots: tuple[x509.Certificate, ...]

    def __post_init__(self) -> None:
        if self.cert.public_key() != self.key.public_key():
            raise ValueError("keys: upstream authority key does not match its certificate")
        if not self.roots:
            raise ValueError("keys: upstream authority needs at least one root")


def _read_pem_certs(path: Path) -> list[x509.Certificate]:
    try:
        certs = certificates_from_pem(path.read_bytes())
    except DecodeError as err:
        raise ValueError(f"keys: {str(path)!r}: {err}") from err
    if not certs:
        raise ValueError(f"keys: no pem certificates in {str(path)!r}")
    return certs


def load_upstream_authority(
    cert_path: str | Path, key_path: str | Path, bundle_path: str | Path | None = None
) -> UpstreamAuthority:
    """Disk UpstreamAuthority: cert file (signing cert first, then intermediates), key, optional roots.

    Without ``bundle_path`` the signing certificate must be self-signed and is the root.
    """
    chain = _read_pem_certs(Path(cert_path))
    key = _load_key(Path(key_path).read_bytes(), "upstream authority key")
    if bundle_path is not None:
        roots = tuple(_read_pem_certs(Path(bundle_path)))
        return UpstreamAuthority(cert=chain[0], intermediates=tuple(chain[1:]), key=key, roots=roots)
    if len(chain) != 1 or chain[0].subject != chain[0].issuer:
        raise ValueError("keys: upstream certificate is not self-signed; give bundle_path with its roots")
    return UpstreamAuthority(cert=chain[0], intermediates=(), key=key, roots=(chain[0],))

"""Persisted agent identity in ``data_dir`` (so a restart needs no new join token).

Files: ``agent-svid.pem`` (chain), ``agent-key.pem`` (0600), ``bundle.pem``
(trust anchors for the server), ``agent-state.json`` (ID, can_reattest)::

    state = load_state(data_dir)              # None when nothing usable is stored
    save_state(data_dir, state)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from spiffe_agent.errors import AgentError
from spiffe_py import _pem
from spiffe_py.fsutil import write_private, write_public
from spiffe_py.spiffeid import SpiffeId

SVID_FILE = "agent-svid.pem"
KEY_FILE = "agent-key.pem"
BUNDLE_FILE = "bundle.pem"
STATE_FILE = "agent-state.json"


class StorageError(AgentError):
    """Stored agent state is unreadable or inconsistent."""


@dataclass(frozen=True, slots=True)
class AgentState:
    """The agent's own identity and the trust anchors it uses for the server."""

    spiffe_id: SpiffeId
    chain: tuple[x509.Certificate, ...]
    key: ec.EllipticCurvePrivateKey
    bundle: tuple[x509.Certificate, ...]
    can_reattest: bool = False

    def __repr__(self) -> str:
        return f"AgentState(not_after={self.not_after})"  # the ID may embed the join token

    @property
    def not_before(self) -> datetime:
        """Agent SVID NotBefore."""
        return self.chain[0].not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        """Agent SVID NotAfter."""
        return self.chain[0].not_valid_after_utc


def save_state(data_dir: Path, state: AgentState) -> None:
    """Write all state files (key 0600)."""
    write_private(data_dir / KEY_FILE, _pem.private_key_to_pem(state.key))
    write_public(data_dir / SVID_FILE, _pem.certificates_to_pem(state.chain))
    write_public(data_dir / BUNDLE_FILE, _pem.certificates_to_pem(state.bundle))
    meta = {"spiffe_id": str(state.spiffe_id), "can_reattest": state.can_reattest}
    write_public(data_dir / STATE_FILE, json.dumps(meta).encode())


def load_state(data_dir: Path) -> AgentState | None:
    """Read stored state; None if absent. Raises StorageError when present but broken."""
    if not (data_dir / STATE_FILE).exists():
        return None
    try:
        meta = json.loads((data_dir / STATE_FILE).read_bytes())
        key = _pem.private_key_from_any((data_dir / KEY_FILE).read_bytes())
        chain = tuple(_pem.certificates_from_any((data_dir / SVID_FILE).read_bytes()))
        bundle = tuple(_pem.certificates_from_any((data_dir / BUNDLE_FILE).read_bytes()))
        spiffe_id = SpiffeId.parse(str(meta["spiffe_id"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise StorageError(f"storage: stored agent state in {str(data_dir)!r} is unreadable") from err
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not chain or chain[0].public_key() != key.public_key():
        raise StorageError(f"storage: stored agent key does not match the stored svid in {str(data_dir)!r}")
    return AgentState(spiffe_id, chain, key, bundle, bool(meta.get("can_reattest", False)))


def clear_state(data_dir: Path) -> None:
    """Forget the stored identity (after eviction the next start must attest again)."""
    for name in (STATE_FILE, KEY_FILE, SVID_FILE, BUNDLE_FILE):
        (data_dir / name).unlink(missing_ok=True)


def key_path(data_dir: Path) -> Path:
    """Path of the stored agent key (for ssl.load_cert_chain)."""
    return data_dir / KEY_FILE


def svid_path(data_dir: Path) -> Path:
    """Path of the stored agent SVID chain."""
    return data_dir / SVID_FILE

"""The TCP listener's TLS context, rotated in place without a restart.

The listening context's ``sni_callback`` (called for every ClientHello, with or without SNI)
switches each new connection to the newest context, so a renewed server SVID or a rotated
bundle applies to the next handshake::

    tls = ServerTls(data_dir / "server-svid")
    tls.update(chain, key, roots)             # after every server SVID renewal / bundle change
    await server.start(host, port, ssl=tls.context)
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from spiffe_py.fsutil import write_private, write_public

ALPN = ["h2"]


def _pem(certs: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


class ServerTls:
    """Holds the listening SSLContext and swaps in a fresh one on every update."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._current: ssl.SSLContext | None = None
        self.context = self._new_context()
        self.context.sni_callback = self._select

    @staticmethod
    def _new_context() -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_OPTIONAL  # AttestAgent callers have no SVID yet
        ctx.set_alpn_protocols(ALPN)
        return ctx

    def _select(self, ssl_object: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        del server_name
        if self._current is not None:
            ssl_object.context = self._current

    def update(self, chain: Sequence[x509.Certificate], key: PrivateKeyTypes,
               roots: Sequence[x509.Certificate]) -> None:
        """Serve ``chain`` (leaf first) with ``key`` and accept client SVIDs chaining to ``roots``."""
        cert_file, key_file = self._dir / "svid.pem", self._dir / "svid.key"
        write_public(cert_file, _pem(chain))
        write_private(key_file, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
        fresh = self._new_context()
        for ctx in (fresh, self.context):
            ctx.load_cert_chain(cert_file, key_file)
            ctx.load_verify_locations(cadata=_pem(roots).decode())
        self._current = fresh

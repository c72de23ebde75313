"""The broker's TLS listener context (stdlib ``ssl``, for aiohttp) from its own X509-SVID, following rotation.

Each handshake takes the context built for the newest SVID and bundles (an SNI callback swaps
it in; OpenSSL calls it for every ClientHello, with or without SNI), so rotation needs no restart.
Client certificates are optional (a JWT-SVID bearer is the other way in) and, when sent, must chain
to a trust bundle the agent gave us; the broker then re-verifies the leaf against the bundle of its
own trust domain on every request (:mod:`spiffe_broker.admission`). The private key is handed to
OpenSSL through an anonymous memory file, never written to disk::

    tls = RotatingServerContext(lambda: source.x509_context())
    web.TCPSite(runner, host, port, ssl_context=tls.context)
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable

from cryptography.hazmat.primitives.serialization import Encoding

from spiffe_py.errors import NoIdentityError
from spiffe_py.workloadapi import X509Context
from spiffe_py.x509svid import X509Svid

log = logging.getLogger(__name__)


def _memfd_path(data: bytes, name: str) -> tuple[int, str]:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.write(fd, data)
    return fd, f"/proc/self/fd/{fd}"


def select_svid(ctx: X509Context, spiffe_id: str) -> X509Svid:
    """The SVID of ``ctx`` with ``spiffe_id`` ("" = the default one); NoIdentityError if the agent gave none."""
    if not spiffe_id:
        return ctx.default_svid
    for svid in ctx.svids:
        if str(svid.spiffe_id) == spiffe_id:
            return svid
    raise NoIdentityError(f"broker: the agent issued no SVID for {spiffe_id}")


def build_context(ctx: X509Context, spiffe_id: str = "") -> ssl.SSLContext:
    """A server context for the broker's SVID in ``ctx``, trusting every bundle's X.509 authorities for clients."""
    svid = select_svid(ctx, spiffe_id)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_OPTIONAL
    cert_fd, cert_path = _memfd_path(svid.chain_pem(), "broker-svid")
    key_fd, key_path = _memfd_path(svid.key_pem(), "broker-svid-key")
    try:
        context.load_cert_chain(cert_path, key_path)
    finally:
        os.close(cert_fd)
        os.close(key_fd)
    cas = "".join(cert.public_bytes(Encoding.PEM).decode() for b in ctx.bundles.x509_bundles()
                  for cert in b.authorities)
    context.load_verify_locations(cadata=cas)
    context.set_alpn_protocols(["http/1.1"])
    return context


class RotatingServerContext:
    """The listener's context; every handshake switches to the context of the current SVID."""

    def __init__(self, current: Callable[[], X509Context], spiffe_id: str = "") -> None:
        self._current = current
        self._spiffe_id = spiffe_id
        self._built_for = current()
        self._active = build_context(self._built_for, spiffe_id)
        # the context the listener holds: only its callback matters, each handshake switches to active()
        self.context = build_context(self._built_for, spiffe_id)
        self.context.sni_callback = self._on_hello
        self._active.sni_callback = self._on_hello

    def active(self) -> ssl.SSLContext:
        """The context for the current SVID (rebuilt when the agent rotated it)."""
        ctx = self._current()
        if ctx is not self._built_for:
            try:
                fresh = build_context(ctx, self._spiffe_id)
            except (ssl.SSLError, ValueError, OSError, NoIdentityError) as err:
                log.error("tls: cannot use the new SVID, keeping the previous one: %s", err)
                return self._active
            fresh.sni_callback = self._on_hello
            self._built_for, self._active = ctx, fresh
            svid = select_svid(ctx, self._spiffe_id)
            log.info("tls: serving the rotated SVID of %s (expires %s)", svid.spiffe_id, svid.expires_at)
        return self._active

    def _on_hello(self, sock: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                  _ctx: ssl.SSLContext) -> None:
        sock.context = self.active()

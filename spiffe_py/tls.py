"""mTLS from SPIFFE sources, with pyOpenSSL.

Peers are authenticated with the bundle of the peer's own trust domain (WA-09) through
:func:`spiffe_py.x509svid.verify_x509_svid` (plus the source's CRLs), then authorized by an
:data:`Authorizer`. OpenSSL's own chain verdict is ignored: it has no trust store here.
The server context picks the source's current SVID on every handshake, so rotation needs no
restart; a client context carries the SVID current when it was built (build one per connection)::

    ctx = server_context(source, source, authorize_member_of(TrustDomain.parse("example.org")))
    conn = SSL.Connection(ctx, sock)
    conn.set_accept_state()
    conn.do_handshake()
    peer = peer_spiffe_id(conn)
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from cryptography import x509
from OpenSSL import SSL, crypto

from spiffe_py.bundle import X509BundleSource
from spiffe_py.clock import Clock, SystemClock
from spiffe_py.errors import AuthorizationError, SpiffeError, VerificationError
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_py.x509svid import X509Svid, X509SvidSource, verify_x509_svid

log = logging.getLogger(__name__)

Authorizer = Callable[[SpiffeId, Sequence[x509.Certificate]], None]
"""Raises AuthorizationError unless the verified peer ``(id, chain)`` is allowed."""

_VERIFY_MODE = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT


@runtime_checkable
class CrlSource(Protocol):
    """Anything that can report the current CRLs (X509Source does)."""

    def get_crls(self) -> Sequence[x509.CertificateRevocationList]: ...


def authorize_any() -> Authorizer:
    """Allow every authenticated peer."""

    def authorize(peer: SpiffeId, chain: Sequence[x509.Certificate]) -> None:
        return None

    return authorize


def authorize_id(expected: SpiffeId) -> Authorizer:
    """Allow exactly ``expected``."""

    def authorize(peer: SpiffeId, chain: Sequence[x509.Certificate]) -> None:
        if peer != expected:
            raise AuthorizationError(f"tls: unexpected id {str(peer)!r}, want {str(expected)!r}")

    return authorize


def authorize_one_of(*allowed: SpiffeId) -> Authorizer:
    """Allow any of ``allowed``."""
    allowed_set = frozenset(allowed)

    def authorize(peer: SpiffeId, chain: Sequence[x509.Certificate]) -> None:
        if peer not in allowed_set:
            raise AuthorizationError(f"tls: unexpected id {str(peer)!r}, not one of the allowed ids")

    return authorize


def authorize_member_of(trust_domain: TrustDomain) -> Authorizer:
    """Allow any ID in ``trust_domain``."""

    def authorize(peer: SpiffeId, chain: Sequence[x509.Certificate]) -> None:
        if not peer.member_of(trust_domain):
            raise AuthorizationError(f"tls: unexpected trust domain {peer.trust_domain.name!r}")

    return authorize


def verify_peer(
    chain: Sequence[x509.Certificate],
    bundles: X509BundleSource,
    authorizer: Authorizer,
    *,
    now: datetime,
    crls: Sequence[x509.CertificateRevocationList] = (),
) -> SpiffeId:
    """Authenticate ``chain`` with its own trust domain's bundle (WA-09), then authorize it."""
    peer = verify_x509_svid(chain, bundles, now=now, crls=crls)
    authorizer(peer, chain)
    return peer


class _PeerVerifier:
    """pyOpenSSL verify callback: collects the peer chain and decides at depth 0."""

    def __init__(self, bundles: X509BundleSource, authorizer: Authorizer, clock: Clock, crls: CrlSource | None) -> None:
        self._bundles = bundles
        self._authorizer = authorizer
        self._clock = clock
        self._crls = crls
        self._chains: weakref.WeakKeyDictionary[SSL.Connection, dict[int, x509.Certificate]] = (
            weakref.WeakKeyDictionary()
        )

    def __call__(self, conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
        certs = self._chains.setdefault(conn, {})
        certs[depth] = cert.to_cryptography()
        if depth != 0:
            return True  # the whole chain is judged when OpenSSL reaches the leaf
        chain: list[x509.Certificate] = []
        while len(chain) in certs:
            chain.append(certs[len(chain)])
        try:
            crls = self._crls.get_crls() if self._crls is not None else ()
            peer = verify_peer(chain, self._bundles, self._authorizer, now=self._clock.now(), crls=crls)
        except (SpiffeError, ValueError) as err:
            _results[conn] = err if isinstance(err, SpiffeError) else VerificationError(f"tls: {err}")
            log.info("tls: peer rejected: %s", err)
            return False
        _results[conn] = peer
        return True


# Outcome of peer verification per connection: the verified ID or the rejection.
_results: weakref.WeakKeyDictionary[SSL.Connection, SpiffeId | SpiffeError] = weakref.WeakKeyDictionary()


def peer_spiffe_id(conn: SSL.Connection) -> SpiffeId:
    """The verified and authorized peer ID of a handshaken connection; raises the rejection otherwise."""
    result = _results.get(conn)
    if isinstance(result, SpiffeId):
        return result
    raise result or VerificationError("tls: peer was not verified")


def _new_context(verifier: _PeerVerifier) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_verify(_VERIFY_MODE, verifier)
    return ctx


def _use_svid(ctx: SSL.Context, svid: X509Svid) -> None:
    ctx.use_certificate(svid.leaf)
    for intermediate in svid.cert_chain[1:]:
        ctx.add_extra_chain_cert(intermediate)
    ctx.use_privatekey(svid.private_key)
    ctx.check_privatekey()


def _crl_source(bundles: X509BundleSource, crls: CrlSource | None) -> CrlSource | None:
    if crls is not None:
        return crls
    return bundles if isinstance(bundles, CrlSource) else None


class _RotatingServer:
    """Swaps each new connection onto a context holding the source's current SVID."""

    def __init__(self, svids: X509SvidSource, verifier: _PeerVerifier) -> None:
        self._svids = svids
        self._verifier = verifier
        self._cached: tuple[X509Svid, SSL.Context] | None = None

    def current(self) -> SSL.Context:
        svid = self._svids.get_x509_svid()
        cached = self._cached
        if cached is not None and cached[0] is svid:
            return cached[1]
        ctx = _new_context(self._verifier)
        _use_svid(ctx, svid)
        self._cached = (svid, ctx)
        return ctx

    def on_client_hello(self, conn: SSL.Connection) -> None:
        # OpenSSL >= 1.1.1 runs the servername callback on every ClientHello, with or without SNI.
        conn.set_context(self.current())


def server_context(
    svid_source: X509SvidSource,
    bundle_source: X509BundleSource,
    authorizer: Authorizer,
    *,
    crls: CrlSource | None = None,
    clock: Clock | None = None,
) -> SSL.Context:
    """A server context that requires a client SVID, verifies and authorizes it, and follows rotation."""
    verifier = _PeerVerifier(bundle_source, authorizer, clock or SystemClock(), _crl_source(bundle_source, crls))
    rotating = _RotatingServer(svid_source, verifier)
    ctx = _new_context(verifier)
    _use_svid(ctx, svid_source.get_x509_svid())
    ctx.set_tlsext_servername_callback(rotating.on_client_hello)
    return ctx


def client_context(
    svid_source: X509SvidSource,
    bundle_source: X509BundleSource,
    authorizer: Authorizer,
    *,
    crls: CrlSource | None = None,
    clock: Clock | None = None,
) -> SSL.Context:
    """A client context with the source's current SVID that verifies and authorizes the server."""
    verifier = _PeerVerifier(bundle_source, authorizer, clock or SystemClock(), _crl_source(bundle_source, crls))
    ctx = _new_context(verifier)
    _use_svid(ctx, svid_source.get_x509_svid())
    return ctx

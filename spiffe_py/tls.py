"""mTLS from SPIFFE sources: pyOpenSSL contexts, standard library ``ssl`` contexts and grpcio credentials.

Peers are authenticated with the bundle of the peer's own trust domain (WA-09) through
:func:`spiffe_py.x509svid.verify_x509_svid` (plus the source's CRLs), then authorized by an
:data:`Authorizer`. OpenSSL's own chain verdict is ignored: it has no trust store here.
The server context picks the source's current SVID on every handshake, so rotation needs no
restart; a client context carries the SVID current when it was built (build one per connection)::

    ctx = server_context(source, source, authorize_member_of(TrustDomain.parse("example.org")))
    conn = SSL.Connection(ctx, sock)
    conn.set_accept_state()
    peer = handshake(conn)     # a refusal raises why: chain, trust domain or authorizer, and the ID presented

grpcio cannot run custom verification inside the handshake, so its helpers split the work:
:func:`grpc_server_credentials` lets gRPC check the client chain against ONE trust domain's bundle
(and follows SVID/bundle rotation), and :class:`SpiffeAuthInterceptor` re-verifies the peer chain
with :func:`verify_peer` (bundle of the peer's TD, CRLs) and runs the authorizer before every
handler. :func:`grpc_channel_credentials` is weaker: gRPC checks the server chain against one
trust domain's bundle and the target name against the server's DNS SANs; it checks no SPIFFE ID
and does not follow rotation (build a new channel to pick up a new SVID)::

    server = grpc.server(pool, interceptors=[SpiffeAuthInterceptor(source, authorize_id(client_id))])
    server.add_secure_port("127.0.0.1:8443", grpc_server_credentials(source, source, td))

Libraries built on the standard library's ``ssl`` (httpx, requests/urllib3, aiohttp, uvicorn) take
a :class:`SpiffeSSLContext`: the bundle of one trust domain as CA data plus a SPIFFE ID check
right after each handshake, with the current SVID and bundle for every new connection::

    httpx.Client(verify=SpiffeSSLContext.client(source, source, td, authorize_id(server_id)))
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import tempfile
import threading
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import grpc
from cryptography import x509
from OpenSSL import SSL, crypto

from spiffe_py.bundle import X509Bundle, X509BundleSource
from spiffe_py.clock import Clock, SystemClock
from spiffe_py.errors import AuthorizationError, BundleNotFoundError, SpiffeError, VerificationError
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_py.x509svid import X509Svid, X509SvidSource, validate_leaf_profile, verify_x509_svid

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
            rejection = _rejection(err, chain)
            _results[conn] = rejection
            log.info("%s", rejection)
            return False
        _results[conn] = peer
        return True


def _presented_id(chain: Sequence[x509.Certificate]) -> str:
    """The URI SAN the peer's leaf presents (unverified: for messages only)."""
    try:
        uris = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
    except (IndexError, ValueError, x509.ExtensionNotFound):
        return "no SPIFFE ID"
    return repr(uris[0]) if len(uris) == 1 else f"{len(uris)} URI SANs"


def _rejection(err: Exception, chain: Sequence[x509.Certificate]) -> SpiffeError:
    """Why the peer was refused, naming the stage (chain, trust domain, authorizer) and the presented ID.

    The error keeps its class (AuthorizationError, RevokedError, ...); only the message grows.
    """
    if isinstance(err, AuthorizationError):
        stage = "the authorizer"
    elif isinstance(err, BundleNotFoundError) or "no x509 authorities for trust domain" in str(err):
        stage = "trust domain (no bundle for it)"
    else:
        stage = "chain verification"
    kind: type[SpiffeError] = type(err) if isinstance(err, SpiffeError) else VerificationError
    return kind(f"tls: peer presenting {_presented_id(chain)} refused by {stage}: {err}")


def handshake(conn: SSL.Connection) -> SpiffeId:
    """Complete the handshake and return the verified peer ID.

    A peer this side refused raises why (chain, trust domain or authorizer, and the ID it
    presented) instead of OpenSSL's bare "certificate verify failed".
    """
    try:
        conn.do_handshake()
    except SSL.Error as err:
        rejection = _results.get(conn)
        if isinstance(rejection, SpiffeError):
            raise rejection from err
        raise
    return peer_spiffe_id(conn)


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
    verifier, ctx = _svid_context(svid_source, bundle_source, authorizer, crls, clock)
    ctx.set_tlsext_servername_callback(_RotatingServer(svid_source, verifier).on_client_hello)
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
    return _svid_context(svid_source, bundle_source, authorizer, crls, clock)[1]


def _svid_context(
    svid_source: X509SvidSource,
    bundle_source: X509BundleSource,
    authorizer: Authorizer,
    crls: CrlSource | None,
    clock: Clock | None,
) -> tuple[_PeerVerifier, SSL.Context]:
    # Shared by both sides: the peer verifier and a context presenting the current SVID.
    verifier = _PeerVerifier(bundle_source, authorizer, clock or SystemClock(), _crl_source(bundle_source, crls))
    ctx = _new_context(verifier)
    _use_svid(ctx, svid_source.get_x509_svid())
    return verifier, ctx


# -- grpcio --------------------------------------------------------------------------------------


class _ServerCertificates:
    """Builds grpc certificate configurations from the current SVID and trust domain bundle."""

    def __init__(self, svids: X509SvidSource, bundles: X509BundleSource, trust_domain: TrustDomain) -> None:
        self._svids = svids
        self._bundles = bundles
        self._trust_domain = trust_domain
        self._last: tuple[X509Svid, X509Bundle] | None = None

    def build(self) -> Any:
        svid = self._svids.get_x509_svid()
        roots = self._bundles.get_x509_bundle_for_trust_domain(self._trust_domain)
        self._last = (svid, roots)
        return grpc.ssl_server_certificate_configuration([(svid.key_pem(), svid.chain_pem())], roots.to_pem())

    def fetch(self) -> Any:
        """grpc's per-handshake hook: a new configuration after a rotation, else None (keep)."""
        try:
            svid = self._svids.get_x509_svid()
            roots = self._bundles.get_x509_bundle_for_trust_domain(self._trust_domain)
        except SpiffeError as err:
            log.warning("tls: keeping the current grpc certificates: %s", err)
            return None
        if self._last is not None and self._last[0] is svid and self._last[1] is roots:
            return None
        return self.build()


def grpc_server_credentials(
    svid_source: X509SvidSource, bundle_source: X509BundleSource, trust_domain: TrustDomain
) -> Any:
    """grpcio server credentials: the current SVID, client certificates required and chained to
    ``trust_domain``'s bundle; both follow rotation. Pair with :class:`SpiffeAuthInterceptor`."""
    certificates = _ServerCertificates(svid_source, bundle_source, trust_domain)
    return grpc.dynamic_ssl_server_credentials(
        certificates.build(), certificates.fetch, require_client_authentication=True
    )


def grpc_channel_credentials(
    svid_source: X509SvidSource, bundle_source: X509BundleSource, trust_domain: TrustDomain
) -> Any:
    """grpcio channel credentials from the current SVID; the server chain must lead to
    ``trust_domain``'s bundle and carry a DNS SAN matching the target (or ssl_target_name_override).
    No SPIFFE ID is checked and the credentials do not rotate."""
    svid = svid_source.get_x509_svid()
    roots = bundle_source.get_x509_bundle_for_trust_domain(trust_domain)
    return grpc.ssl_channel_credentials(roots.to_pem(), svid.key_pem(), svid.chain_pem())


def _auth_context_chain(context: Any) -> list[x509.Certificate]:
    auth = context.auth_context()
    pem = b"".join(auth.get("x509_pem_cert_chain") or auth.get("x509_pem_cert") or [])
    if not pem:
        raise VerificationError("tls: peer presented no certificate")
    return x509.load_pem_x509_certificates(pem)


_HANDLER_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)


class SpiffeAuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    """grpcio server interceptor: verifies the peer chain (WA-09, CRLs) and authorizes its SPIFFE ID
    before the handler runs; aborts with UNAUTHENTICATED or PERMISSION_DENIED."""

    def __init__(
        self,
        bundle_source: X509BundleSource,
        authorizer: Authorizer,
        *,
        crls: CrlSource | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._bundles = bundle_source
        self._authorizer = authorizer
        self._crls = _crl_source(bundle_source, crls)
        self._clock = clock or SystemClock()

    def check(self, context: Any) -> SpiffeId:
        """The verified, authorized peer ID of ``context``; aborts the RPC otherwise."""
        try:
            crls = self._crls.get_crls() if self._crls is not None else ()
            chain = _auth_context_chain(context)
            return verify_peer(chain, self._bundles, self._authorizer, now=self._clock.now(), crls=crls)
        except AuthorizationError as err:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(err))
        except (SpiffeError, ValueError) as err:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"tls: peer rejected: {err}")
        raise AssertionError("unreachable: context.abort raises")

    def _guard(self, behavior: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def guarded(request: Any, context: Any) -> Any:
            self.check(context)
            return behavior(request, context)

        return guarded

    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        """Wrap the handler so that :meth:`check` runs first."""
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        for kind, make in _HANDLER_KINDS:
            behavior = getattr(handler, kind)
            if behavior is not None:
                return make(
                    self._guard(behavior),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler


# -- standard library ssl (httpx, requests/urllib3, aiohttp, uvicorn) --------------------------------


class _SpiffeSsl:
    """State behind a :class:`SpiffeSSLContext`: the per-SVID inner context and the peer check.

    The standard library cannot verify a chain in Python, so the work is split: OpenSSL verifies
    the peer chain against ONE trust domain's bundle (given as CA data, nothing else trusted), and
    after the handshake the leaf must carry a SPIFFE ID of that trust domain with the X509-SVID
    leaf profile, not be on a CRL of its issuer, and pass the authorizer.
    """

    def __init__(self, svids: X509SvidSource, bundles: X509BundleSource, trust_domain: TrustDomain,
                 authorizer: Authorizer, *, server_side: bool, crls: CrlSource | None) -> None:
        self._svids = svids
        self._bundles = bundles
        self._trust_domain = trust_domain
        self._authorizer = authorizer
        self._server_side = server_side
        self._crls = crls
        self._lock = threading.Lock()  # requests and httpx may open connections from several threads
        self._built: tuple[X509Svid, X509Bundle, tuple[str, ...], ssl.SSLContext] | None = None
        self.alpn: tuple[str, ...] = ()

    def current(self) -> ssl.SSLContext:
        """The context for a new connection: the current SVID and bundle (rebuilt when either rotated)."""
        svid = self._svids.get_x509_svid()
        bundle = self._bundles.get_x509_bundle_for_trust_domain(self._trust_domain)
        with self._lock:
            built = self._built
            # a dataclass bundle compares by its authorities: equal after a refetch, different after a rotation
            if built is not None and built[0] is svid and built[1] == bundle and built[2] == self.alpn:
                return built[3]
            ctx = _stdlib_context(svid, bundle, server_side=self._server_side, alpn=self.alpn)
            self._built = (svid, bundle, self.alpn, ctx)
            return ctx

    def check(self, leaf_der: bytes | None) -> SpiffeId:
        """The verified peer's SPIFFE ID after the handshake; SSLCertVerificationError saying why not."""
        if leaf_der is None:
            raise ssl.SSLCertVerificationError("tls: peer presented no certificate")
        leaf = x509.load_der_x509_certificate(leaf_der)
        try:
            peer = validate_leaf_profile(leaf)
            if not peer.member_of(self._trust_domain):
                raise VerificationError(
                    f"tls: peer belongs to trust domain {peer.trust_domain.name!r}, this context trusts only "
                    f"{self._trust_domain.name!r}")
            crls = self._crls.get_crls() if self._crls is not None else ()
            if any(crl.issuer == leaf.issuer and crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
                   for crl in crls):
                raise VerificationError(f"tls: certificate serial {leaf.serial_number:x} is revoked")
            self._authorizer(peer, [leaf])
        except (SpiffeError, ValueError) as err:
            rejection = _rejection(err, [leaf])
            log.info("%s", rejection)
            raise ssl.SSLCertVerificationError(str(rejection)) from err
        return peer


def _stdlib_context(svid: X509Svid, bundle: X509Bundle, *, server_side: bool, alpn: Sequence[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # SPIFFE IDs are checked after the handshake, not host names
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=bundle.to_pem().decode())
    # the standard library loads keys only from files: a private directory, gone right after loading
    with tempfile.TemporaryDirectory(prefix="spiffe-tls-") as tmp:
        cert_path, key_path = os.path.join(tmp, "svid.pem"), os.path.join(tmp, "svid.key")
        for path, data in ((cert_path, svid.chain_pem()), (key_path, svid.key_pem())):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(cert_path, key_path)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class SpiffeSSLContext(ssl.SSLContext):
    """An :class:`ssl.SSLContext` for mTLS with SVIDs, for libraries that take one.

    Each new connection gets the source's current SVID and ``trust_domain``'s current bundle (as CA
    data), so rotation needs no restart; after the handshake the peer's SPIFFE ID is checked
    (see :class:`_SpiffeSsl`) and a refused peer fails the handshake with
    :class:`ssl.SSLCertVerificationError` naming the stage and the presented ID. ::

        ctx = SpiffeSSLContext.client(source, source, td, authorize_id(server_id))
        httpx.Client(verify=ctx)
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx))
        urllib3.PoolManager(ssl_context=ctx, assert_hostname=False)   # requests: the same, in an HTTPAdapter
        uvicorn.Config(app, ssl_context_factory=lambda config, default: SpiffeSSLContext.server(
            source, source, td, authorize_member_of(td)))

    urllib3 (and so requests) matches host names itself unless told ``assert_hostname=False``; an
    SVID has no host name to match, its SPIFFE ID is checked instead.

    Only peers of ``trust_domain`` are accepted (one context per trust domain: the standard library
    cannot pick the bundle by the peer's trust domain). Settings made on this object other than
    ALPN protocols do not reach connections; the peer is always verified.
    """

    _spiffe: _SpiffeSsl

    @classmethod
    def client(cls, svid_source: X509SvidSource, bundle_source: X509BundleSource, trust_domain: TrustDomain,
               authorizer: Authorizer, *, crls: CrlSource | None = None) -> SpiffeSSLContext:
        """A client context presenting the current SVID and authorizing the server."""
        return cls._build(ssl.PROTOCOL_TLS_CLIENT, svid_source, bundle_source, trust_domain, authorizer, crls=crls)

    @classmethod
    def server(cls, svid_source: X509SvidSource, bundle_source: X509BundleSource, trust_domain: TrustDomain,
               authorizer: Authorizer, *, crls: CrlSource | None = None) -> SpiffeSSLContext:
        """A server context requiring a client SVID of ``trust_domain`` that ``authorizer`` accepts."""
        return cls._build(ssl.PROTOCOL_TLS_SERVER, svid_source, bundle_source, trust_domain, authorizer, crls=crls)

    @classmethod
    def _build(cls, protocol: int, svids: X509SvidSource, bundles: X509BundleSource, trust_domain: TrustDomain,
               authorizer: Authorizer, *, crls: CrlSource | None) -> SpiffeSSLContext:
        ctx = cls(protocol)
        server_side = protocol == ssl.PROTOCOL_TLS_SERVER
        if not server_side:
            ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
        state = _SpiffeSsl(svids, bundles, trust_domain, authorizer, server_side=server_side,
                           crls=_crl_source(bundles, crls))
        ctx._spiffe = state
        state.current()  # fail now, not on the first connection, when there is no SVID or bundle
        ctx.sslobject_class = _object_class(state)  # asyncio: uvicorn, aiohttp, httpx async
        ctx.sslsocket_class = _socket_class(state, ctx)  # blocking sockets: requests/urllib3, httpx sync
        return ctx

    def set_alpn_protocols(self, alpn_protocols: Any) -> None:
        """Record the ALPN protocols (httpx sets them) for the connections' contexts."""
        super().set_alpn_protocols(alpn_protocols)
        self._spiffe.alpn = tuple(alpn_protocols)

    def current_context(self) -> ssl.SSLContext:
        """The context the next connection will use (current SVID and bundle)."""
        return self._spiffe.current()


def peer_id_from_ssl(obj: ssl.SSLObject | ssl.SSLSocket) -> SpiffeId:
    """The SPIFFE ID of the peer of a connection made with a :class:`SpiffeSSLContext` (checked at handshake)."""
    peer = getattr(obj, "spiffe_id", None)
    if not isinstance(peer, SpiffeId):
        raise VerificationError("tls: peer was not verified")
    return peer


def _object_class(state: _SpiffeSsl) -> type[ssl.SSLObject]:
    class SpiffeSSLObject(ssl.SSLObject):
        spiffe_id: SpiffeId | None = None

        @classmethod
        def _create(cls, *args: Any, context: ssl.SSLContext, **kwargs: Any) -> Any:
            return super()._create(*args, context=state.current(), **kwargs)  # type: ignore[misc]

        def do_handshake(self) -> None:
            super().do_handshake()
            self.spiffe_id = state.check(self.getpeercert(binary_form=True))

    return SpiffeSSLObject


def _socket_class(state: _SpiffeSsl, outer: ssl.SSLContext) -> type[ssl.SSLSocket]:
    class SpiffeSSLSocket(ssl.SSLSocket):
        spiffe_id: SpiffeId | None = None

        def accept(self) -> tuple[ssl.SSLSocket, Any]:
            # a listening socket's connections go through the outer context too (current SVID, peer check)
            conn, address = socket.socket.accept(self)
            settings = vars(self)  # set by SSLSocket._create; not in the type stubs
            return outer.wrap_socket(conn, server_side=True,
                                     do_handshake_on_connect=settings.get("do_handshake_on_connect", True),
                                     suppress_ragged_eofs=settings.get("suppress_ragged_eofs", True)), address

        @classmethod
        def _create(cls, *args: Any, context: ssl.SSLContext, **kwargs: Any) -> Any:
            return super()._create(*args, context=state.current(), **kwargs)  # type: ignore[misc]

        def do_handshake(self, block: bool = False) -> None:
            super().do_handshake(block)
            try:
                self.spiffe_id = state.check(self.getpeercert(binary_form=True))
            except ssl.SSLError:
                self.close()
                raise

    return SpiffeSSLSocket

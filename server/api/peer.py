"""Who is calling: the mTLS peer's X.509-SVID, re-verified against the current bundle.

The one place in ``server`` that reads grpclib's transport (``Peer._transport``)::

    leaf = peer_leaf(stream)                            # raises VerificationError
    caller = verify_peer_svid(leaf, roots, intermediates, now=now)   # SpiffeId
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
from cryptography.x509.verification import VerificationError as _CryptoVerifyError

from spiffe_py.errors import VerificationError
from spiffe_py.spiffeid import SpiffeId

_MAX_CERT_BYTES = 16 * 1024


def _extra(stream: Any, name: str) -> Any:
    transport = getattr(stream.peer, "_transport", None)
    return None if transport is None else transport.get_extra_info(name)


def is_tls(stream: Any) -> bool:
    """True if the stream runs over TLS (TCP listener), False for the local Unix socket."""
    return _extra(stream, "ssl_object") is not None


def peer_leaf(stream: Any) -> x509.Certificate:
    """The client certificate the peer presented in the TLS handshake."""
    ssl_object = _extra(stream, "ssl_object")
    der = None if ssl_object is None else ssl_object.getpeercert(binary_form=True)
    if not der:
        raise VerificationError("peer: no client certificate presented")
    if len(der) > _MAX_CERT_BYTES:
        raise VerificationError("peer: client certificate is too large")
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as err:
        raise VerificationError("peer: client certificate is malformed") from err


def spiffe_id_of(cert: x509.Certificate) -> SpiffeId:
    """The single SPIFFE ID URI SAN of ``cert``."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError) as err:
        raise VerificationError("peer: certificate has no subject alternative name") from err
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise VerificationError(f"peer: certificate must hold exactly one uri san, got {len(uris)}")
    try:
        return SpiffeId.parse(uris[0])
    except ValueError as err:
        raise VerificationError("peer: certificate uri san is not a spiffe id") from err


def verify_peer_svid(leaf: x509.Certificate, roots: Sequence[x509.Certificate],
                     intermediates: Sequence[x509.Certificate], *, now: datetime) -> SpiffeId:
    """Chain ``leaf`` to one of ``roots`` at ``now`` and return its SPIFFE ID."""
    if not roots:
        raise VerificationError("peer: no trust bundle roots")
    verifier = PolicyBuilder().store(Store(list(roots))).time(now).build_client_verifier()
    try:
        verifier.verify(leaf, list(intermediates))
    except _CryptoVerifyError as err:
        raise VerificationError(f"peer: certificate does not chain to the current bundle: {err}") from err
    return spiffe_id_of(leaf)

"""OpenAI workload identity federation with SPIFFE: no ``OPENAI_API_KEY``.

JWT-SVID as the RFC 8693 subject token (the SDK exchanges it and refreshes the access token)::

    from openai import OpenAI
    from spiffe_py.integrations.openai import workload_identity

    client = OpenAI(workload_identity=workload_identity("idp_...", "sa_..."))

X.509-SVID as the TLS client certificate (OpenAI's mTLS token endpoint)::

    from openai import OpenAI
    from openai.auth import x509_workload_identity
    from spiffe_py.integrations.openai import x509_http_client

    client = OpenAI(workload_identity=x509_workload_identity(identity_provider_id="idp_...",
                                                             service_account_id="sa_..."),
                    http_client=x509_http_client())

The SDK (``pip install "spiffe-py[openai]"``, openai 3.x on httpx2) is imported only by
:func:`x509_http_client`; :func:`workload_identity` builds the plain mapping the SDK takes.
"""

from __future__ import annotations

import os
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from spiffe_py.integrations._jwt import DEFAULT_TIMEOUT_S, JwtSvidProvider
from spiffe_py.workloadapi import JwtSource, WorkloadApiClient, X509Source
from spiffe_py.x509svid import X509Svid

if TYPE_CHECKING:
    import httpx2

DEFAULT_AUDIENCE = "https://api.openai.com/v1"

__all__ = ["DEFAULT_AUDIENCE", "SubjectTokenProvider", "WorkloadIdentity", "workload_identity", "x509_http_client"]


class SubjectTokenProvider(TypedDict):
    """``openai.auth.SubjectTokenProvider``: how the SDK gets its subject token."""

    token_type: Literal["jwt", "id"]
    get_token: Callable[[], str]  # a JwtSvidProvider


class _WorkloadIdentityBase(TypedDict):
    identity_provider_id: str
    service_account_id: str
    provider: SubjectTokenProvider


class WorkloadIdentity(_WorkloadIdentityBase, total=False):
    """``openai.auth.WorkloadIdentity``, the value of ``OpenAI(workload_identity=...)``."""

    refresh_buffer_seconds: float


def workload_identity(
    identity_provider_id: str,
    service_account_id: str,
    *,
    audience: str = DEFAULT_AUDIENCE,
    source: JwtSource | None = None,
    refresh_buffer_seconds: float | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> WorkloadIdentity:
    """The ``workload_identity`` mapping for ``openai.OpenAI``, with a JWT-SVID for ``audience`` as subject token.

    ``audience`` must be the one registered with the OpenAI identity provider (exact match).
    ``source``: a started JwtSource to share; by default one is started on the first exchange.
    The SDK calls ``provider["get_token"]`` whenever it exchanges, i.e. lazily and again before
    its access token expires; each call returns the agent's current JWT-SVID (see JwtSvidProvider).
    """
    if not identity_provider_id or not service_account_id:
        raise ValueError("integrations.openai: identity_provider_id and service_account_id are required")
    identity: WorkloadIdentity = {
        "identity_provider_id": identity_provider_id,
        "service_account_id": service_account_id,
        "provider": {"token_type": "jwt", "get_token": JwtSvidProvider(audience, source=source, timeout=timeout)},
    }
    if refresh_buffer_seconds is not None:
        identity["refresh_buffer_seconds"] = refresh_buffer_seconds
    return identity


class _RotatingClientCert:
    """An ssl.SSLContext whose client certificate follows the X509Source.

    ``refresh()`` reloads the chain into the same context when the source's SVID changed. It runs
    before every API request (an httpx2 request hook) and once a second in a daemon thread, since
    the SDK's token exchange skips request hooks. Connections made afterwards present the new
    certificate; open ones keep the one they shook hands with (still valid: the agent renews at
    half-life).
    """

    POLL_S = 1.0

    def __init__(self, source: X509Source, context: ssl.SSLContext) -> None:
        self._source = source
        self.context = context
        self._loaded: X509Svid | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.refresh()
        threading.Thread(target=self._follow, name="spiffe-x509-client-cert", daemon=True).start()

    def refresh(self, *_: object) -> None:
        svid = self._source.get_x509_svid()
        if svid is self._loaded:
            return
        with self._lock:
            if svid is self._loaded:
                return
            _load_cert_chain(self.context, svid)
            self._loaded = svid

    def _follow(self) -> None:
        while not self._stop.wait(self.POLL_S):
            try:
                self.refresh()
            except Exception:  # the source has no SVID right now (or was closed): keep the last one
                if self._source.closed:
                    return

    def close(self) -> None:
        self._stop.set()


def _load_cert_chain(context: ssl.SSLContext, svid: X509Svid) -> None:
    """``load_cert_chain`` needs files: a private 0700 directory that lives only for the call."""
    with tempfile.TemporaryDirectory(prefix="spiffe-svid-") as tmp:
        cert, key = Path(tmp) / "svid.pem", Path(tmp) / "svid.key"
        for path, data in ((cert, svid.chain_pem()), (key, svid.key_pem())):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        context.load_cert_chain(cert, key)


def x509_http_client(
    source: X509Source | None = None,
    *,
    server_trust: ssl.SSLContext | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    **client_kwargs: Any,
) -> httpx2.Client:
    """An ``httpx2.Client`` (via the SDK's ``DefaultHttpx2Client``) presenting the workload's X509-SVID.

    ``source``: a started X509Source to share (the caller closes it); by default one is started
    now. ``server_trust``: the context that verifies OpenAI's servers (default: the OS trust store,
    as the SDK does, honouring ``SSL_CERT_FILE``); the client certificate is loaded into it and
    reloaded on every rotation. Other keyword arguments go to ``DefaultHttpx2Client`` (``proxy``,
    ``timeout``...). Closing the client stops following the source, and closes a source it started.
    """
    from openai import DefaultHttpx2Client

    owned_client = None
    if source is None:
        owned_client = WorkloadApiClient(timeout=timeout)
        try:
            source = X509Source.start(owned_client, timeout=timeout)
        except BaseException:
            owned_client.close()
            raise
    if server_trust is None:
        import httpcore2  # the SDK's own default: SSL_CERT_FILE/SSL_CERT_DIR, else the OS store

        server_trust = httpcore2.default_ssl_context()
    cert = _RotatingClientCert(source, server_trust)
    hooks = client_kwargs.pop("event_hooks", {})
    hooks = {**hooks, "request": [cert.refresh, *hooks.get("request", [])]}
    client: httpx2.Client = DefaultHttpx2Client(verify=cert.context, event_hooks=hooks, **client_kwargs)
    close = client.close

    def close_all() -> None:
        close()
        cert.close()
        if owned_client is not None:
            source.close()
            owned_client.close()

    client.close = close_all  # type: ignore[method-assign]
    return client

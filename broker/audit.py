"""The broker's audit trail: the same hash-chained JSONL format as the server and agent (spiffe_py.audit).

One record per proxied request and per token exchange, with caller, upstream, method, path,
model, status, tokens and duration; never a key, body or token (``build_event`` also refuses
anything that looks like a JWT or a private key). The trail is ``<data_dir>/audit.jsonl`` (0600);
with ``server_address`` set it is also forwarded to the server's ``AgentAPI.ForwardAudit`` over
mTLS with the broker's current X509-SVID, by the forwarder the agent uses
(``spiffe_py.audit_forward``, position in ``audit.forwarded``). The server accepts it when the
broker's SPIFFE ID is in its ``[audit] forwarders``. ``spiffe-server audit verify --file`` checks
the local file::

    audit = BrokerAudit(cfg.data_dir)
    client = ServerAuditClient(host, port, SelectedSvid(x509, cfg.spiffe_id), x509, trust_domain)
    await audit.forwarder.forward_forever(client.connect)
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from grpclib.client import Channel
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from spiffe_broker import metrics
from spiffe_broker.servertls import select_svid
from spiffe_py._proto.spiffepy.server.v1 import agent_pb2
from spiffe_py._proto.spiffepy.server.v1.agent_grpc import AgentAPIStub
from spiffe_py.audit import (
    AuditLog,
    AuditSecretError,
    FsyncMode,
    JsonlFileSink,
    build_event,
    last_rotated_record,
    load_jsonl,
)
from spiffe_py.audit_forward import ForwardHooks, Send, TrailForwarder
from spiffe_py.bundle import X509BundleSource
from spiffe_py.errors import SpiffeError
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_py.tls import SpiffeSSLContext, authorize_id
from spiffe_py.workloadapi import X509Source
from spiffe_py.x509svid import X509Svid, X509SvidSource

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"
POSITION_FILE = "audit.forwarded"
CALL_TIMEOUT = 30.0
_HOOKS = ForwardHooks(forwarded=metrics.AUDIT_FORWARDED.inc, failed=lambda _: metrics.AUDIT_FORWARD_FAILURES.inc())


class ForwardCallError(SpiffeError):
    """A ForwardAudit call failed (refused by the server, or the server was unreachable); retried with backoff.

    ``status`` is the gRPC status name (UNAVAILABLE when unreachable): the forwarder retries a refusal
    (PERMISSION_DENIED, UNAUTHENTICATED) only rarely.
    """

    def __init__(self, message: str, status: str = "UNAVAILABLE") -> None:
        self.status = status
        super().__init__(message)


class BrokerAudit:
    """Appends broker events to the local chain; ``forwarder`` sends them to the server when configured."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = data_dir / AUDIT_FILE
        records = load_jsonl(path) if path.exists() else []
        self._sink = JsonlFileSink(path, fsync=FsyncMode.INTERVAL, max_bytes=16 * 1024 * 1024)
        self._log = AuditLog.resume(self._sink, records, after=last_rotated_record(path))
        self.path = path
        self.forwarder = TrailForwarder(self._sink, data_dir / POSITION_FILE, hooks=_HOOKS)

    def record(self, *, now: datetime, spiffe_id: str | None, allowed: bool, reason: str, method: str,
               details: dict[str, Any], serial: str | None = None, jti: str | None = None) -> None:
        """Append one record; a value that looks like a secret is replaced, never written."""
        try:
            event = build_event(now=now, actor="broker", spiffe_id=spiffe_id, selectors=(),
                                decision="allow" if allowed else "deny", reason=reason[:512], method=method,
                                serial=serial, jti=jti, details=details)
        except AuditSecretError:
            safe = {k: v for k, v in details.items() if k in ("upstream", "status", "tokens", "duration_ms")}
            event = build_event(now=now, actor="broker", spiffe_id=spiffe_id, selectors=(),
                                decision="allow" if allowed else "deny", reason="(redacted: looked like a secret)",
                                method=method, details={**safe, "redacted": True})
        self._log.append(event)
        self.forwarder.wake()

    def close(self) -> None:
        """fsync and stop the flusher."""
        self._sink.close()


class SelectedSvid:
    """The broker's X509-SVID (``spiffe_id`` of the config, "" = the default one) as an X509SvidSource."""

    def __init__(self, source: X509Source, spiffe_id: str) -> None:
        self._source = source
        self._spiffe_id = spiffe_id

    def get_x509_svid(self) -> X509Svid:
        """The current SVID (the same object until the agent rotates it)."""
        return select_svid(self._source.x509_context(), self._spiffe_id)


class ServerAuditClient:
    """``AgentAPI.ForwardAudit`` over mTLS, presenting the current SVID: a new connection once it rotated.

    The server must present ``spiffe://<td>/spire/server`` chaining to ``trust_domain``'s bundle.
    """

    def __init__(self, host: str, port: int, svids: X509SvidSource, bundles: X509BundleSource,
                 trust_domain: TrustDomain) -> None:
        self.address = f"{host}:{port}"
        self._host, self._port = host, port
        self._svids = svids
        server_id = SpiffeId.from_segments(trust_domain, "spire", "server")
        self._tls = SpiffeSSLContext.client(svids, bundles, trust_domain, authorize_id(server_id))
        self._tls.set_alpn_protocols(["h2"])
        self._channel: Channel | None = None
        self._svid: X509Svid | None = None

    async def connect(self) -> Send:
        """The :data:`Send` for ``TrailForwarder.forward_forever`` (always ready: the SVID came first)."""
        return self.send

    async def send(self, records: list[str]) -> int:
        """Forward ``records``; how many the server accepted. ForwardCallError when refused or unreachable."""
        svid = self._svids.get_x509_svid()
        if self._channel is None or svid is not self._svid:
            self.close()  # a rotated SVID: the open connection still presents the old one
            self._channel, self._svid = Channel(self._host, self._port, ssl=self._tls), svid
        request = agent_pb2.ForwardAuditRequest(records=records)
        try:
            response = await AgentAPIStub(self._channel).ForwardAudit(request, timeout=CALL_TIMEOUT)
        except GRPCError as err:
            raise ForwardCallError(f"audit: the server refused ForwardAudit: {err.status.name}: "
                                   f"{err.message}", err.status.name) from None
        except (OSError, StreamTerminatedError, ProtocolError) as err:  # TLS, refused, timed out
            self.close()
            raise ForwardCallError(f"audit: server {self.address} unreachable: {type(err).__name__}: "
                                   f"{err}") from None
        return int(response.accepted)

    def close(self) -> None:
        """Close the connection (the next call opens a new one)."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None

"""The broker's I/O shell: aiohttp server (TLS with its own SVID), upstream client, background watchers.

::

    broker = await Broker.start(cfg)          # SVID, bundles and revocations from the local agent
    await broker.serve()                       # until cancelled

Per proxied request: authenticate (client X509-SVID or JWT-SVID bearer, revocation checked),
the upstream's allow list, budgets, the CEL policy, then forward with the secret injected and
stream the answer back unbuffered, counting the provider's token usage; one audit record and
metrics at the end. Errors map to statuses by :data:`spiffe_broker.errors.HTTP_STATUS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import time
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import aiohttp
from aiohttp import web
from prometheus_client import start_http_server

from spiffe_broker import metrics
from spiffe_broker.admission import Admission, Caller, check_not_revoked
from spiffe_broker.audit import BrokerAudit, SelectedSvid, ServerAuditClient
from spiffe_broker.budget import Budgets
from spiffe_broker.config import BrokerConfig, Upstream
from spiffe_broker.errors import (
    BadRequestError,
    BrokerError,
    BudgetExhaustedError,
    ForbiddenError,
    NotFoundError,
    NotReadyError,
    PayloadTooLargeError,
    UnauthenticatedError,
    UpstreamError,
    UpstreamTimeoutError,
    http_status,
)
from spiffe_broker.exchange import (
    MAX_FORM_BYTES,
    ExchangeError,
    Signer,
    act_depth,
    error_body,
    nest_act,
    parse_request,
    token_claims,
)
from spiffe_broker.proxy import body_fields, request_document, response_headers, upstream_headers, with_stream_usage
from spiffe_broker.secrets import SecretStore
from spiffe_broker.servertls import RotatingServerContext, select_svid
from spiffe_broker.usage import SseUsage, body_tokens
from spiffe_py._policy import EMPTY_POLICY, Decision, PolicyHolder
from spiffe_py.clock import Clock, SystemClock
from spiffe_py.errors import SpiffeError
from spiffe_py.jwtsvid import _decode
from spiffe_py.workloadapi import AsyncWorkloadApiClient, JwtSource, RevocationState, X509Source, watch_revocations

log = logging.getLogger("spiffe_broker")

START_TIMEOUT = 60.0
CHUNK = 64 * 1024
MAX_PATH_CHARS = 4096


class Broker:
    """Everything one broker process holds; handlers read it, background tasks keep it current."""

    def __init__(self, cfg: BrokerConfig, *, x509: X509Source, jwt: JwtSource, secrets: SecretStore,
                 clock: Clock, address: str | None) -> None:
        self.cfg = cfg
        self.clock = clock
        self.x509 = x509
        self.jwt = jwt
        self.secrets = secrets
        self.address = address
        self.spiffe_id = select_svid(x509.x509_context(), cfg.spiffe_id).spiffe_id
        self.audience = cfg.audience or str(self.spiffe_id)
        self.issuer = cfg.token_exchange.issuer or str(self.spiffe_id)
        self.signer = Signer.generate()
        self.admission = Admission(audience=self.audience, issuer=self.issuer, issuer_kids=self.signer.kids)
        self.budgets = Budgets()
        self.policy = PolicyHolder(cfg.policy_file, clock=clock) if cfg.policy_file else None
        self.audit = BrokerAudit(cfg.data_dir)
        self.revocations: RevocationState | None = None  # None until the agent's first update
        self.revocations_changed = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None
        self.tls = RotatingServerContext(x509.x509_context, cfg.spiffe_id)

    @classmethod
    async def start(cls, cfg: BrokerConfig, *, clock: Clock | None = None) -> Broker:
        """Check the secrets, then get the SVID and bundles from the agent (waits up to START_TIMEOUT)."""
        secrets = SecretStore({u.name: u.secret_file for u in cfg.upstreams.values()})
        address = cfg.workload_api_socket or None
        x509 = await X509Source.create(AsyncWorkloadApiClient(address), timeout=START_TIMEOUT)
        jwt = await JwtSource.create(AsyncWorkloadApiClient(address), timeout=START_TIMEOUT)
        return cls(cfg, x509=x509, jwt=jwt, secrets=secrets, clock=clock or SystemClock(), address=address)

    # ---- background ----------------------------------------------------------------------

    async def follow_revocations(self) -> None:
        """Keep the revocation state as the agent pushes it; without the stream, fail closed (503)."""

        def lost() -> None:
            if self.revocations is not None:
                log.warning("revocation watch lost: refusing requests (503) until the agent streams again")
            self.revocations = None

        async for state in watch_revocations(self.address, on_disconnect=lost):
            self.revocations = state
            metrics.REVOKED.set(len(state.x509_serials) + len(state.jwt_ids))
            self.revocations_changed.set()

    async def watch_secrets(self) -> None:
        """Re-read secret files when they change (SIGHUP re-reads them all at once)."""
        while True:
            await asyncio.sleep(self.cfg.secret_check_interval)
            await asyncio.to_thread(self.secrets.reload, only_changed=True)

    # ---- helpers -------------------------------------------------------------------------

    def _revocations(self) -> RevocationState:
        if self.revocations is None:
            raise NotReadyError("broker: no revocation state from the agent yet", rule="ready")
        return self.revocations

    def authenticate(self, request: web.Request, *, now: datetime) -> Caller:
        """The caller of ``request``: its client certificate if it sent one, else its JWT-SVID bearer."""
        revocations = self._revocations()
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            return self.admission.from_certificate(der, self.x509.x509_context().bundles, revocations, now=now)
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthenticatedError("auth: present a client X509-SVID or 'Authorization: Bearer <JWT-SVID>'",
                                       rule="svid.missing")
        return self.admission.from_bearer(token.strip(), self._jwt_bundles(), revocations, now=now)

    def _jwt_bundles(self) -> Any:
        try:
            return self.jwt.bundles()
        except SpiffeError as err:
            raise NotReadyError(f"broker: no JWT bundles: {err}", rule="ready") from None

    def evaluate(self, document: dict[str, Any]) -> Decision:
        """The policy decision (no policy file: allow)."""
        if self.policy is None:
            return EMPTY_POLICY.evaluate(document)
        return self.policy.evaluate(document)

    async def read_body(self, request: web.Request) -> bytes:
        """The request body, at most max_request_bytes (413 beyond)."""
        limit = self.cfg.max_request_bytes
        if request.content_length is not None and request.content_length > limit:
            raise PayloadTooLargeError(f"request body larger than {limit} bytes", rule="max_request_bytes")
        body = await request.content.read(limit + 1)
        if len(body) > limit or not request.content.at_eof():
            raise PayloadTooLargeError(f"request body larger than {limit} bytes", rule="max_request_bytes")
        return body

    # ---- handlers ------------------------------------------------------------------------

    async def proxy(self, request: web.Request) -> web.StreamResponse:
        """Forward one request to its upstream (``/<upstream>/<path>``)."""
        started = time.monotonic()
        now = self.clock.now()
        name = request.match_info["upstream"]
        tail = request.match_info["tail"]
        upstream = self.cfg.upstreams.get(name)
        caller: Caller | None = None
        record: dict[str, Any] = {"upstream": name, "http_method": request.method, "path": f"/{name}/{tail}"[:512]}
        try:
            caller = self.authenticate(request, now=now)
            if upstream is None:
                raise NotFoundError(f"no upstream named {name[:64]!r}", rule="upstream")
            if not upstream.allows(str(caller.spiffe_id)):
                raise ForbiddenError(f"{caller.spiffe_id} may not use upstream {name!r}", rule="upstream.allow")
            if len(tail) > MAX_PATH_CHARS:
                raise BadRequestError("path too long", rule="path")
            body = await self.read_body(request)
            fields = body_fields(body, request.headers.get("Content-Type", ""))
            record["model"] = fields.model
            key = (str(caller.spiffe_id), name)
            exhausted = self.budgets.check(key, upstream, now=now)
            if exhausted is not None:
                raise BudgetExhaustedError(exhausted.message, rule=exhausted.rule, retry_after=exhausted.retry_after)
            doc = request_document(now=now, caller=str(caller.spiffe_id), auth=caller.method, upstream=name,
                                   method=request.method, path="/" + tail, fields=fields,
                                   usage=self.budgets.snapshot(key, now=now))
            decision = self.evaluate(doc)
            if not decision.allowed:
                raise ForbiddenError(decision.reason, rule=decision.rule or "policy")
            self.budgets.count_request(key, now=now)
            if upstream.tokens_per_day:
                body = with_stream_usage(fields, tail) or body
            return await self._forward_or_refuse(request, upstream, tail, body, caller=caller, record=record,
                                                 started=started)
        except BrokerError as err:
            return self._refuse(err, caller, record, started, upstream_name=name)

    def _refuse(self, err: BrokerError, caller: Caller | None, record: dict[str, Any], started: float, *,
                upstream_name: str) -> web.Response:
        status, kind = http_status(err)
        metrics.REFUSALS.labels(upstream_name if upstream_name in self.cfg.upstreams else "-", err.rule or kind).inc()
        self._audit(caller, allowed=False, reason=str(err), record={**record, "status": status, "rule": err.rule},
                    started=started)
        headers = {}
        if err.retry_after:
            headers["Retry-After"] = str(err.retry_after)
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="spiffe-broker"'
        return web.json_response({"error": {"type": kind, "message": str(err), "rule": err.rule}}, status=status,
                                 headers=headers)

    def _audit(self, caller: Caller | None, *, allowed: bool, reason: str, record: dict[str, Any],
               started: float) -> None:
        record = {k: v for k, v in record.items() if v is not None}
        record["duration_ms"] = round((time.monotonic() - started) * 1000, 3)
        try:
            self.audit.record(now=self.clock.now(), spiffe_id=None if caller is None else str(caller.spiffe_id),
                              allowed=allowed, reason=reason, method="BrokerProxy", details=record,
                              serial=None if caller is None or caller.serial is None else f"{caller.serial:x}",
                              jti=None if caller is None else caller.jti)
        except (SpiffeError, OSError, ValueError) as err:
            log.error("audit: could not record a request: %s", err)

    async def _forward(self, request: web.Request, upstream: Upstream, tail: str, body: bytes, *, caller: Caller,
                       record: dict[str, Any], started: float) -> web.StreamResponse:
        assert self.session is not None
        url = f"{upstream.base_url}/{tail}"
        if request.query_string:
            url += "?" + request.query_string
        headers = upstream_headers(request.headers.items(), upstream, self.secrets.get(upstream.name).reveal())
        timeout = aiohttp.ClientTimeout(total=self.cfg.upstream_total_timeout,
                                        connect=self.cfg.upstream_connect_timeout,
                                        sock_read=self.cfg.upstream_read_timeout)
        caller_id = str(caller.spiffe_id)
        prepared: web.StreamResponse | None = None  # once set, the status is sent: failures can only cut
        try:
            async with self.session.request(request.method, url, headers=headers, data=body, timeout=timeout,
                                            allow_redirects=False) as up:
                response = web.StreamResponse(status=up.status, reason=up.reason)
                prepared = response
                for k, v in response_headers(up.headers.items()):
                    response.headers.add(k, v)
                streaming = "text/event-stream" in up.headers.get("Content-Type", "")
                if up.content_length is not None and not streaming:
                    response.content_length = up.content_length
                await response.prepare(request)
                meter = SseUsage() if streaming else None
                kept = bytearray()
                sent = 0
                async for chunk in up.content.iter_any():
                    sent += len(chunk)
                    if sent > self.cfg.max_response_bytes and not streaming:
                        log.warning("response from %s over max_response_bytes: connection cut", upstream.name)
                        record.update(status=up.status, error="max_response_bytes")
                        self._audit(caller, allowed=True, reason="response too large", record=record,
                                    started=started)
                        if request.transport is not None:
                            request.transport.close()
                        return response
                    if meter is not None:
                        meter.feed(chunk)
                    elif len(kept) < self.cfg.max_response_bytes:
                        kept += chunk
                    await response.write(chunk)
                await response.write_eof()
        except (TimeoutError, aiohttp.ClientError, ConnectionResetError) as err:
            if prepared is None:
                raise
            log.warning("upstream %s failed mid-response: %s", upstream.name, type(err).__name__)
            record.update(status=prepared.status, error=f"cut: {type(err).__name__}")
            self._audit(caller, allowed=True, reason="upstream failed mid-response", record=record, started=started)
            if request.transport is not None:
                request.transport.close()
            return prepared
        tokens = meter.tokens if meter is not None else body_tokens(bytes(kept))
        self.budgets.add_tokens((caller_id, upstream.name), tokens, now=self.clock.now())
        metrics.REQUESTS.labels(upstream.name, caller_id, str(up.status)).inc()
        metrics.TOKENS.labels(upstream.name, caller_id).inc(tokens)
        metrics.DURATION.labels(upstream.name).observe(time.monotonic() - started)
        record.update(status=up.status, tokens=tokens, stream=streaming)
        self._audit(caller, allowed=True, reason="forwarded", record=record, started=started)
        return response

    async def _forward_or_refuse(self, request: web.Request, upstream: Upstream, tail: str, body: bytes, *,
                                 caller: Caller, record: dict[str, Any], started: float) -> web.StreamResponse:
        """:meth:`_forward`; an upstream that fails before answering is a 502/504 refusal."""
        try:
            return await self._forward(request, upstream, tail, body, caller=caller, record=record, started=started)
        except TimeoutError:
            return self._refuse(UpstreamTimeoutError(f"upstream {upstream.name!r} timed out", rule="upstream.timeout"),
                                caller, record, started, upstream_name=upstream.name)
        except (aiohttp.ClientError, ConnectionResetError) as err:
            return self._refuse(UpstreamError(f"upstream {upstream.name!r} failed: {type(err).__name__}",
                                              rule="upstream.error"), caller, record, started,
                                upstream_name=upstream.name)

    async def jwks(self, request: web.Request) -> web.Response:
        """``GET /.well-known/jwks.json``."""
        return web.json_response(self.signer.jwks(), headers={"Cache-Control": "max-age=60"})

    async def healthz(self, request: web.Request) -> web.Response:
        """200 once the broker has its SVID and the revocation state."""
        if self.revocations is None:
            return web.json_response({"status": "waiting for revocations"}, status=503)
        return web.json_response({"status": "ok", "spiffe_id": str(self.spiffe_id)})

    async def token(self, request: web.Request) -> web.Response:
        """``POST /token``: RFC 8693 token exchange."""
        started = time.monotonic()
        now = self.clock.now()
        caller: Caller | None = None
        record: dict[str, Any] = {"path": "/token"}
        try:
            if request.content_type != "application/x-www-form-urlencoded":
                raise ExchangeError("invalid_request", "content type must be application/x-www-form-urlencoded")
            if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
                raise ExchangeError("invalid_request", "request too large")
            raw = await request.content.read(MAX_FORM_BYTES + 1)
            if len(raw) > MAX_FORM_BYTES:
                raise ExchangeError("invalid_request", "request too large")
            try:
                form = parse_qs(raw.decode("ascii"), keep_blank_values=False, strict_parsing=False,
                                max_num_fields=32)
            except (UnicodeDecodeError, ValueError):
                raise ExchangeError("invalid_request", "malformed form body") from None
            req = parse_request(form)
            record["audience"] = req.target[:256]
            caller, prior_act, subject_expiry, source = self._exchange_subject(request, req.subject_token, req.target,
                                                                               now=now)
            act: dict[str, Any] | None = dict(prior_act) if prior_act else None
            expiries = [subject_expiry]
            actors = []
            if req.actor_token is not None:
                actor = self._exchange_actor(req.actor_token, now=now)
                act = nest_act(actor.spiffe_id, prior_act)
                expiries.append(actor.expires_at)
                actors.append(str(actor.spiffe_id))
                source = {**source, **{f"actor_{k}": v for k, v in actor.revocation_claim().items()}}
            depth = act_depth(act)
            record["act_depth"] = depth
            if depth > self.cfg.token_exchange.max_act_depth:
                raise ExchangeError("invalid_request",
                                    f"act chain of {depth} actors exceeds max_act_depth "
                                    f"({self.cfg.token_exchange.max_act_depth})")
            upstream = self.cfg.upstreams.get(req.target)
            if upstream is None and req.target not in self.cfg.token_exchange.audiences:
                raise ExchangeError("invalid_target", f"unknown audience {req.target[:128]!r}")
            if upstream is not None and not upstream.allows(str(caller.spiffe_id)):
                raise ExchangeError("invalid_target", f"{caller.spiffe_id} may not use upstream {req.target!r}")
            doc = request_document(now=now, caller=str(caller.spiffe_id), auth=caller.method, upstream=req.target,
                                   method="POST", path="/token", fields=body_fields(b"", ""), usage={},
                                   kind="token_exchange", audience=req.target, actors=actors)
            decision = self.evaluate(doc)
            if not decision.allowed:
                raise ExchangeError("unauthorized_client", f"policy rule {decision.rule!r}: {decision.reason}")
            ttl = self.cfg.token_exchange.max_ttl
            if decision.max_ttl is not None:
                ttl = min(ttl, decision.max_ttl)
            ttl = min([ttl, *(e - now for e in expiries)])
            if ttl < timedelta(seconds=1):
                raise ExchangeError("invalid_grant", "the subject or actor SVID expires too soon")
            claims = token_claims(issuer=self.issuer, subject=caller.spiffe_id, audience=req.target, now=now,
                                  ttl=ttl, act=act, source=source)
            token = self.signer.sign(claims)
            metrics.EXCHANGES.labels("issued").inc()
            record.update(status=200, ttl=int(ttl.total_seconds()), token_jti=claims["jti"])
            self._audit_exchange(caller, True, "issued", record, started)
            return web.json_response({"access_token": token, "issued_token_type": "urn:ietf:params:oauth:token-type:"
                                      "access_token", "token_type": "Bearer", "expires_in": int(ttl.total_seconds())},
                                     headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
        except ExchangeError as err:
            status, body = error_body(err)
            metrics.EXCHANGES.labels(err.code).inc()
            self._audit_exchange(caller, False, err.description, {**record, "status": status, "error": err.code},
                                 started)
            return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})
        except NotReadyError as err:
            return web.json_response({"error": "temporarily_unavailable", "error_description": str(err)}, status=503)

    def _audit_exchange(self, caller: Caller | None, allowed: bool, reason: str, record: dict[str, Any],
                        started: float) -> None:
        record["duration_ms"] = round((time.monotonic() - started) * 1000, 3)
        try:
            self.audit.record(now=self.clock.now(), spiffe_id=None if caller is None else str(caller.spiffe_id),
                              allowed=allowed, reason=reason, method="BrokerTokenExchange", details=record)
        except (SpiffeError, OSError, ValueError) as err:
            log.error("audit: could not record a token exchange: %s", err)

    def _exchange_subject(self, request: web.Request, token: str | None, target: str, *,
                          now: datetime) -> tuple[Caller, Any, datetime, dict[str, str]]:
        """(subject, its act chain, its expiry, what revokes it) from subject_token or the client certificate."""
        revocations = self._revocations()
        if token is None:
            try:
                caller = self.authenticate(request, now=now)
            except UnauthenticatedError as err:
                raise ExchangeError("invalid_client", f"no subject_token and no client X509-SVID: {err}") from None
            if caller.method != "x509":
                raise ExchangeError("invalid_request", "subject_token is required without a client X509-SVID")
            return caller, None, caller.expires_at, caller.revocation_claim()
        if self._is_own(token):
            # a delegation step: a token this broker issued, for the same target, chained further
            own = self.signer.verify(token, target, now=now)
            source = own.claims.get("spiffe_source")
            source = {k: v for k, v in source.items() if isinstance(v, str)} if isinstance(source, dict) else {}
            if self._source_revoked(source, revocations):
                raise ExchangeError("invalid_grant", "subject_token derives from a revoked SVID")
            jti = own.claims.get("jti")
            caller = Caller(own.spiffe_id, "broker", own.expiry, jti=jti if isinstance(jti, str) else None)
            return caller, own.claims.get("act"), own.expiry, source
        try:
            _, caller = self.admission.verify_jwt(token, self._jwt_bundles(), self.audience, now=now)
            check_not_revoked(caller, revocations, now=now)
        except UnauthenticatedError as err:
            raise ExchangeError("invalid_grant", f"subject_token refused: {err}") from None
        return caller, None, caller.expires_at, caller.revocation_claim()

    def _exchange_actor(self, token: str, *, now: datetime) -> Caller:
        try:
            _, actor = self.admission.verify_jwt(token, self._jwt_bundles(), self.audience, now=now)
            check_not_revoked(actor, self._revocations(), now=now)
        except UnauthenticatedError as err:
            raise ExchangeError("invalid_grant", f"actor_token refused: {err}") from None
        return actor

    def _is_own(self, token: str) -> bool:
        try:
            return _decode(token).header.get("kid") in self.signer.kids()
        except SpiffeError:
            return False

    @staticmethod
    def _source_revoked(source: dict[str, str], revocations: RevocationState) -> bool:
        for key, value in source.items():
            if key.endswith("x509_serial") and value in revocations.x509_serials:
                return True
            if key.endswith("jti") and value and revocations.jwt_revoked(value):
                return True
        return False

    # ---- serving -------------------------------------------------------------------------

    def application(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=self.cfg.max_request_bytes)
        app.router.add_get("/.well-known/jwks.json", self.jwks)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_post("/token", self.token)
        app.router.add_route("*", "/{upstream}/{tail:.*}", self.proxy)
        return app

    def _audit_client(self) -> ServerAuditClient | None:
        """The server the audit trail is forwarded to (``server_address``), or None: it stays local."""
        if self.cfg.server_address is None:
            log.info("audit: no server_address configured: the audit trail stays local in %s", self.audit.path)
            return None
        host, port = self.cfg.server_address
        client = ServerAuditClient(host, port, SelectedSvid(self.x509, self.cfg.spiffe_id), self.x509,
                                   self.spiffe_id.trust_domain)
        log.info("audit: forwarding the audit trail to the server at %s as %s", client.address, self.spiffe_id)
        return client

    async def serve(self) -> None:
        """Serve until cancelled."""
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=256, keepalive_timeout=60,
                                         ssl=ssl.create_default_context())
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        tasks = [asyncio.create_task(self.follow_revocations()), asyncio.create_task(self.watch_secrets())]
        forwarding = self._audit_client()
        if forwarding is not None:
            tasks.append(asyncio.create_task(self.audit.forwarder.forward_forever(forwarding.connect)))
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.secrets.reload)
        runner = web.AppRunner(self.application(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.cfg.bind_address, self.cfg.bind_port, ssl_context=self.tls.context)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.revocations_changed.wait(), START_TIMEOUT)
            if self.revocations is None:
                log.warning("no revocation state from the agent yet: requests get 503 until it arrives")
            await site.start()
            if self.cfg.metrics_port:
                start_http_server(self.cfg.metrics_port, addr=self.cfg.metrics_address)
            log.info("broker %s listening on https://%s:%d (audience %s, upstreams %s)", self.spiffe_id,
                     self.cfg.bind_address, self.cfg.bind_port, self.audience, ",".join(self.cfg.upstreams))
            await asyncio.Event().wait()
        finally:
            for task in tasks:
                task.cancel()
            if forwarding is not None:
                forwarding.close()
            await runner.cleanup()
            await self.session.close()
            await self.x509.aclose()
            await self.jwt.aclose()
            self.audit.close()


async def run(cfg: BrokerConfig) -> None:
    """Start and serve until SIGTERM/SIGINT."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):  # a stop while waiting for the first SVID is as clean
        broker = await Broker.start(cfg)
        await broker.serve()
    log.info("broker stopped")


__all__ = ["Broker", "run"]

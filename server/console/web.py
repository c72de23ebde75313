"""The web console: aiohttp + Jinja2 pages over the admin service, with htmx progressive enhancement.

Pages: ``/`` (overview), ``/entries``, ``/agents``, ``/revocations``, ``/audit``, ``/policy``,
``/approvals``. Every page works without JavaScript (forms POST and redirect back); the vendored
htmx only swaps the main region in place, and uPlot draws the two charts from JSON endpoints.

Authentication: a client certificate that is an admin SVID (HTTPS only), or a session cookie
from a one-time login link (``/login?token=...``). Every POST needs the session's CSRF token (a
``csrf`` form field or the ``X-CSRF-Token`` header). Every read and change is an admin API call
(:mod:`spiffe_server.console.admin`), so authorization, the ``admin_readonly`` role and the audit
trail are the admin API's::

    console = Console(ctx, admin_service, cfg.console)
    await console.start()          # logs the one-time login URL once
    ...
    await console.close()
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import Encoding

from spiffe_py._policy import EntryFacts, PolicyError, WorkloadFacts, build_input
from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, types_pb2
from spiffe_py.errors import SpiffeError
from spiffe_server.api.admin_service import AdminService
from spiffe_server.api.context import ServerContext
from spiffe_server.api.local_call import Principal
from spiffe_server.approvals import approval_rules
from spiffe_server.config import ConsoleConfig
from spiffe_server.console.admin import AdminCaller, AdminCallError
from spiffe_server.console.auth import LoginError, LoginRegistry, Session, csrf_ok
from spiffe_server.datastore import AuditFilter, AuditMinuteCount

log = logging.getLogger("spiffe_server.console")

COOKIE = "spiffe_console"
MAX_BODY = 64 * 1024  # form posts are small
MAX_FIELD = 4096
PAGE_SIZE = 100
CHART_WINDOW = timedelta(hours=1)
CHART_DENIALS = 1000  # newest denials the per-rule chart counts
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # the login URL carries a token
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# the audit methods the overview's "SVIDs issued / denied" chart counts (svid_series_of)
SIGNING_METHODS = frozenset({"BatchNewX509SVID", "NewJWTSVID", "MintX509SVID", "MintJWTSVID"})
AGENT_FETCH_METHODS = frozenset({"FetchX509SVID", "FetchJWTSVID"})
NAV = (("/", "Overview"), ("/entries", "Entries"), ("/agents", "Agents"), ("/revocations", "Revocations"),
       ("/audit", "Audit"), ("/policy", "Policy"), ("/approvals", "Approvals"))

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class User:
    """The authenticated caller of one request: who (for the audit), the role, the CSRF token to expect."""

    def __init__(self, principal: Principal, csrf: str, name: str) -> None:
        self.principal = principal
        self.csrf = csrf
        self.name = name

    @property
    def readonly(self) -> bool:
        """True for the admin_readonly role (as far as the console knows; the admin API decides)."""
        return self.principal.readonly


USER = web.RequestKey("user", User)


def _fmt_time(value: int | float | datetime | None) -> str:
    if value is None or value == 0:
        return "-"
    when = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _field(data: Any, name: str, *, limit: int = MAX_FIELD) -> str:
    value = data.get(name, "")
    if not isinstance(value, str):
        raise web.HTTPBadRequest(text=f"{name}: must be a text field")
    if len(value) > limit:
        raise web.HTTPBadRequest(text=f"{name}: at most {limit} characters")
    return value.strip()


def _int(text: str, name: str, default: int = 0) -> int:
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: must be an integer, got {text[:40]!r}") from None


def _selectors(text: str) -> list[types_pb2.Selector]:
    out = []
    for raw in text.replace(",", "\n").splitlines():
        line = raw.strip()
        if not line:
            continue
        kind, sep, value = line.partition(":")
        if not sep:
            raise web.HTTPBadRequest(text=f"selectors: {line[:80]!r} is not type:value")
        out.append(types_pb2.Selector(type=kind, value=value))
    return out


def _labels(text: str) -> dict[str, str]:
    out = {}
    for raw in text.replace(",", "\n").splitlines():
        line = raw.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise web.HTTPBadRequest(text=f"labels: {line[:80]!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


def svid_series_of(count: AuditMinuteCount) -> str | None:
    """``"issued"``, ``"denied"`` or None (a record about something else) for the overview chart.

    An agent's forwarded ``FetchX509SVID``/``FetchJWTSVID`` allow is not counted: it hands out an
    SVID the server signed (and counted) already, from the agent's cache or by a ``NewJWTSVID``.
    A forwarded record claiming a server method is the agent's own word, so it is not counted either.
    """
    if count.forwarded:
        return "denied" if count.decision == "deny" and count.method in AGENT_FETCH_METHODS else None
    if count.method not in SIGNING_METHODS:
        return None
    return {"allow": "issued", "deny": "denied"}.get(count.decision)


def _record_view(text: str) -> dict[str, Any]:
    """The fields the audit table shows, from one sealed record (forwarded agent records unwrapped)."""
    try:
        rec = json.loads(text)
    except ValueError:
        return {"raw": text[:200]}
    details = rec.get("details")
    inner = details.get("forwarded") if isinstance(details, dict) else None
    event: dict[str, Any] = inner if isinstance(inner, dict) else rec
    raw_facts = event.get("details")
    facts: dict[str, Any] = raw_facts if isinstance(raw_facts, dict) else {}
    return {"seq": rec.get("seq"), "time": rec.get("time", ""), "actor": rec.get("actor", ""),
            "spiffe_id": event.get("spiffe_id") or "", "decision": rec.get("decision", ""),
            "method": event.get("method", ""), "reason": event.get("reason", ""), "rule": facts.get("rule") or "",
            "hash": rec.get("hash", "")}


class Console:
    """The console's HTTP(S) listener, pages and session state."""

    def __init__(self, ctx: ServerContext, service: AdminService, cfg: ConsoleConfig) -> None:
        self._ctx = ctx
        self._cfg = cfg
        self._admin = AdminCaller(service)
        scheme = "https" if cfg.cert_file is not None else "http"
        host = f"[{cfg.bind_address}]" if ":" in cfg.bind_address else cfg.bind_address
        self._base_url = f"{scheme}://{host}:{cfg.bind_port}"
        self.logins = LoginRegistry(base_url=self._base_url, clock=ctx.clock)
        self._secret = secrets.token_bytes(32)  # CSRF tokens of mTLS users (HMAC of their certificate)
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("spiffe_server.console", "templates"),
            autoescape=True, undefined=jinja2.StrictUndefined, auto_reload=False)
        self._env.filters["time"] = _fmt_time
        self._runner: web.AppRunner | None = None
        self._ssl: ssl.SSLContext | None = None
        self._roots: tuple[x509.Certificate, ...] = ()
        self.port = cfg.bind_port
        self._series: Counter[tuple[int, str]] = Counter()  # (minute, "issued" | "denied") -> SVIDs
        self._series_seq = 0  # the newest audit seq counted into _series
        # (policy generation, when the console first saw it): the holder keeps no load time
        self._policy_seen = (ctx.guard.policy_generation, ctx.clock.now())
        self.render_seconds: list[tuple[str, float]] = []  # (path, server time) of recent pages, for benchmarks

    # -- lifecycle ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application (routes and middlewares)."""
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._headers, self._auth])
        static = Path(str(resources.files("spiffe_server.console") / "static"))
        app.add_routes([
            web.get("/login", self._login), web.get("/favicon.ico", self._favicon), web.post("/logout", self._logout),
            web.get("/", self._overview), web.get("/overview/series", self._overview_series),
            web.get("/entries", self._entries), web.post("/entries", self._entry_create),
            web.get("/entries/{id}", self._entry_detail), web.post("/entries/{id}/delete", self._entry_delete),
            web.post("/entries/{id}/labels", self._entry_labels), web.post("/entries/{id}/edit", self._entry_edit),
            web.post("/entries/{id}/quarantine", self._entry_quarantine),
            web.post("/entries/{id}/revoke", self._entry_revoke),
            web.get("/agents", self._agents), web.post("/agents/action", self._agent_action),
            web.get("/revocations", self._revocations), web.post("/revocations", self._revoke),
            web.get("/audit", self._audit), web.get("/audit/verify", self._audit_verify),
            web.get("/audit/series", self._audit_series),
            web.get("/policy", self._policy), web.post("/policy/whatif", self._whatif),
            web.get("/approvals", self._approvals), web.post("/approvals/approve", self._approve),
            web.post("/approvals/reject", self._reject),
            web.static("/static", static, show_index=False, follow_symlinks=False),
        ])
        return app

    def _tls(self) -> ssl.SSLContext | None:
        cfg = self._cfg
        if cfg.cert_file is None or cfg.key_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cfg.cert_file, cfg.key_file)
        # an admin SVID may log in with mTLS: ask for a client certificate, accept none (the login link)
        context.verify_mode = ssl.CERT_OPTIONAL
        self._ssl = context
        self.refresh_roots()
        return context

    def refresh_roots(self) -> bool:
        """Trust the bundle's current X.509 roots for client certificates; True if new ones were added.

        OpenSSL can only add roots: one dropped from the bundle stays loaded, but the admin API
        verifies each call's SVID against the current roots, so it is refused there.
        """
        roots = self._ctx.roots()
        if self._ssl is None or roots == self._roots:
            return False
        self._ssl.load_verify_locations(cadata="".join(c.public_bytes(Encoding.PEM).decode() for c in roots))
        self._roots = roots
        return True

    async def start(self) -> str:
        """Listen, and log the one-time login URL of the ``admin`` console user; returns that URL."""
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._cfg.bind_address, self._cfg.bind_port, ssl_context=self._tls(),
                           backlog=128)
        await site.start()
        server: Any = site._server
        if self._cfg.bind_port == 0 and server is not None and getattr(server, "sockets", None):
            self.port = int(server.sockets[0].getsockname()[1])
            scheme = "https" if self._cfg.cert_file is not None else "http"
            self.logins = LoginRegistry(base_url=f"{scheme}://{self._cfg.bind_address}:{self.port}",
                                        clock=self._ctx.clock)
        url, _ = self.logins.issue("admin", readonly=False)
        # The one deliberate secret in a log (as Jupyter does): a one-time link, useless once used or
        # after 24 h; the server never logs it again. CreateConsoleLogin issues more.
        log.warning("console: log in at %s (one-time link)", url)
        return url

    async def close(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- middlewares ----------------------------------------------------------------------------

    @web.middleware
    async def _headers(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        except AdminCallError as err:
            response = self._error_page(request, err.http_status, err.message)
        response.headers.update(SECURITY_HEADERS)
        if request.method == "GET" and not request.path.startswith("/static/"):
            self.render_seconds.append((request.path, time.perf_counter() - started))
            del self.render_seconds[:-1000]
        return response

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/static/") or request.path in ("/login", "/favicon.ico"):
            return await handler(request)
        user = self._user(request)
        if user is None:
            if request.method != "GET":
                raise web.HTTPUnauthorized(text="console: log in first (the one-time link printed at start)")
            return self._error_page(request, 401, "Log in with the one-time link the server printed at start.")
        if request.method == "POST":
            form = await request.post()
            given = request.headers.get("X-CSRF-Token") or form.get("csrf")
            if not csrf_ok(user.csrf, given if isinstance(given, str) else None):
                raise web.HTTPForbidden(text="console: missing or wrong CSRF token")
        request[USER] = user
        return await handler(request)

    def _user(self, request: web.Request) -> User | None:
        self.refresh_roots()  # after a CA rotation, new connections accept SVIDs from the new root
        leaf = self._client_leaf(request)
        if leaf is not None:
            principal = Principal(actor=_san(leaf), readonly=False, leaf=leaf)  # as for a gRPC admin SVID
            csrf = hmac.new(self._secret, leaf.fingerprint(SHA256()), hashlib.sha256).hexdigest()
            return User(principal, csrf, _san(leaf))
        session = self.logins.session(request.cookies.get(COOKIE, ""))
        if session is None:
            return None
        return User(Principal(actor=session.actor, readonly=session.readonly), session.csrf, session.user)

    @staticmethod
    def _client_leaf(request: web.Request) -> x509.Certificate | None:
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        return x509.load_der_x509_certificate(der) if der else None

    # -- rendering ------------------------------------------------------------------------------

    def _render(self, request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
        user = request.get(USER)
        page = self._env.get_template(template).render(
            nav=NAV, path=request.path, user=user, trust_domain=self._ctx.config.trust_domain.name, **values)
        return web.Response(text=page, status=status, content_type="text/html", charset="utf-8")

    def _error_page(self, request: web.Request, status: int, message: str) -> web.Response:
        return self._render(request, "error.html", status=status, status_code=status, message=message)

    async def _call(self, request: web.Request, method: str, message: Any) -> Any:
        user: User = request[USER]
        return await self._admin.call(user.principal, method, message)

    @staticmethod
    def _back(location: str, **params: str) -> web.HTTPSeeOther:
        query = urlencode({k: v for k, v in params.items() if v})
        return web.HTTPSeeOther(location + (f"?{query}" if query else ""))

    # -- login ----------------------------------------------------------------------------------

    async def _login(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("token", "")
        try:
            session_id, session = self.logins.redeem(token)
        except LoginError as err:
            return self._error_page(request, 403, str(err))
        log.info("console login", extra={"user": session.user, "readonly": session.readonly})
        response = web.HTTPSeeOther("/")
        response.set_cookie(COOKIE, session_id, httponly=True, secure=True, samesite="Strict", path="/",
                            max_age=int((session.expires_at - self._ctx.clock.now()).total_seconds()))
        return response

    async def _favicon(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        self.logins.logout(request.cookies.get(COOKIE, ""))
        response = web.HTTPSeeOther("/")
        response.del_cookie(COOKIE, path="/")
        return response

    # -- overview -------------------------------------------------------------------------------

    async def _overview(self, request: web.Request) -> web.StreamResponse:
        authorities = {}
        for kind in ("x509", "jwt"):
            reply = await self._call(request, "ShowLocalAuthorities", admin_pb2.LocalAuthorityRequest(kind=kind))
            authorities[kind] = list(reply.authorities)
        agents = (await self._call(request, "CountAgents", admin_pb2.CountRequest())).count
        entries = (await self._call(request, "CountEntries", admin_pb2.CountRequest())).count
        revocations = await self._count_revocations(request)
        pending = len((await self._call(request, "ListPendingApprovals",
                                        admin_pb2.ListPendingApprovalsRequest())).items)
        now = int(self._ctx.clock.now().timestamp())
        return self._render(request, "overview.html", authorities=authorities, agents=agents, entries=entries,
                            revocations=revocations, pending=pending, now=now)

    async def _count_revocations(self, request: web.Request) -> str:
        reply = await self._call(request, "ListRevocations", admin_pb2.ListRevocationsRequest(page_size=1000))
        return f"{len(reply.revocations)}+" if reply.next_page_token else str(len(reply.revocations))

    async def _overview_series(self, request: web.Request) -> web.StreamResponse:
        """SVIDs issued and denied per minute over the last hour (the audit trail, svid_series_of), for uPlot.

        The per-minute counts are kept between requests; each request counts only the records
        appended since the previous one.
        """
        await self._call(request, "CountAgents", admin_pb2.CountRequest())  # an admin read authorizes the caller
        start = self._ctx.clock.now() - CHART_WINDOW
        first = int(start.timestamp()) // 60 * 60
        fresh, self._series_seq = await self._ctx.call(self._ctx.store.audit_counts_by_minute,
                                                       since=datetime.fromtimestamp(first, UTC),
                                                       after_seq=self._series_seq)
        for count in fresh:
            series = svid_series_of(count)
            if series is not None:
                self._series[(int(count.minute.timestamp()), series)] += count.total
        for key in [k for k in self._series if k[0] < first]:
            del self._series[key]
        minutes = [first + 60 * i for i in range(61)]
        return web.json_response({"t": minutes, "issued": [self._series[(m, "issued")] for m in minutes],
                                  "denied": [self._series[(m, "denied")] for m in minutes]})

    # -- entries --------------------------------------------------------------------------------

    async def _entries(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        filters = {"spiffe_id": q.get("spiffe_id", "")[:2048], "parent_id": q.get("parent_id", "")[:2048],
                   "selector": q.get("selector", "")[:2048], "match": q.get("match", "")[:10] or "superset",
                   "label": q.get("label", "")[:256]}
        selectors = _selectors(filters["selector"]) if filters["selector"] else []
        # every filter is the admin API's, applied by the datastore query before paging
        reply = await self._call(request, "ListEntries", admin_pb2.ListEntriesRequest(
            spiffe_id=filters["spiffe_id"], parent_id=filters["parent_id"], selectors=selectors,
            match_selectors=filters["match"] if selectors else "",
            labels=[x.strip() for x in filters["label"].split(",") if x.strip()],
            page_size=PAGE_SIZE, page_token=q.get("page", "")[:256]))
        next_page = ""
        if reply.next_page_token:
            next_page = "/entries?" + urlencode({**{k: v for k, v in filters.items() if v},
                                                 "page": reply.next_page_token})
        return self._render(request, "entries.html", entries=list(reply.entries), next_page=next_page,
                            filters=filters, message=q.get("message", "")[:300])

    async def _entry_create(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        entry = types_pb2.Entry(
            spiffe_id=_field(form, "spiffe_id"), parent_id=_field(form, "parent_id"),
            selectors=_selectors(_field(form, "selectors")),
            x509_svid_ttl=_int(_field(form, "x509_svid_ttl"), "x509_svid_ttl"),
            jwt_svid_ttl=_int(_field(form, "jwt_svid_ttl"), "jwt_svid_ttl"),
            labels=_labels(_field(form, "labels")), admin=form.get("admin") == "on",
            hint=_field(form, "hint", limit=1024))
        created = await self._call(request, "CreateEntry", admin_pb2.CreateEntryRequest(entry=entry))
        raise self._back(f"/entries/{created.id}", message="entry created")

    async def _entry_detail(self, request: web.Request) -> web.StreamResponse:
        entry_id = request.match_info["id"]
        entry = await self._call(request, "GetEntry", admin_pb2.GetEntryRequest(id=entry_id))
        agents = []
        if entry.parent_id:
            try:
                agents = [await self._call(request, "GetAgent", admin_pb2.AgentRequest(spiffe_id=entry.parent_id))]
            except AdminCallError:
                agents = []  # parented to another entry (or a node alias), not to an agent
        revocations = [r for r in (await self._call(request, "ListRevocations", admin_pb2.ListRevocationsRequest(
            page_size=1000))).revocations if r.entry_id == entry.id]
        # the issuance log has no admin call; GetEntry above authorized the caller
        issued = await self._ctx.call(self._ctx.store.list_issuances, now=self._ctx.clock.now(), entry_id=entry.id)
        latest = sorted(issued, key=lambda i: i.expires_at, reverse=True)[:10]
        return self._render(request, "entry.html", entry=entry, agents=agents, revocations=revocations, issued=latest,
                            message=request.query.get("message", "")[:300])

    async def _entry_delete(self, request: web.Request) -> web.StreamResponse:
        await self._call(request, "DeleteEntry", admin_pb2.DeleteEntryRequest(id=request.match_info["id"]))
        raise self._back("/entries", message="entry deleted")

    async def _entry_edit(self, request: web.Request) -> web.StreamResponse:
        """UpdateEntry with the form's fields; the fields the form has no input for are kept."""
        form = await request.post()
        entry_id = request.match_info["id"]
        entry = types_pb2.Entry()
        entry.CopyFrom(await self._call(request, "GetEntry", admin_pb2.GetEntryRequest(id=entry_id)))
        entry.spiffe_id, entry.parent_id = _field(form, "spiffe_id"), _field(form, "parent_id")
        del entry.selectors[:]
        entry.selectors.extend(_selectors(_field(form, "selectors")))
        entry.x509_svid_ttl = _int(_field(form, "x509_svid_ttl"), "x509_svid_ttl")
        entry.jwt_svid_ttl = _int(_field(form, "jwt_svid_ttl"), "jwt_svid_ttl")
        entry.hint = _field(form, "hint", limit=1024)
        await self._call(request, "UpdateEntry", admin_pb2.UpdateEntryRequest(entry=entry))
        raise self._back(f"/entries/{entry_id}", message="entry updated")

    async def _entry_labels(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        entry_id = request.match_info["id"]
        remove = [k.strip() for k in _field(form, "remove_labels").split(",") if k.strip()]
        await self._call(request, "PatchEntry", admin_pb2.PatchEntryRequest(
            id=entry_id, set_labels=_labels(_field(form, "set_labels")), remove_labels=remove,
            clear_quarantine=form.get("clear_quarantine") == "on"))
        raise self._back(f"/entries/{entry_id}", message="labels updated")

    async def _entry_quarantine(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        entry_id = request.match_info["id"]
        if form.get("clear") == "on":
            await self._call(request, "PatchEntry", admin_pb2.PatchEntryRequest(id=entry_id, clear_quarantine=True))
        else:
            await self._call(request, "QuarantineEntry", admin_pb2.QuarantineEntryRequest(
                id=entry_id, reason=_field(form, "reason", limit=256)))
        raise self._back(f"/entries/{entry_id}", message="quarantine updated")

    async def _entry_revoke(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        entry_id = request.match_info["id"]
        reply = await self._call(request, "RevokeEntry", admin_pb2.RevokeEntryRequest(
            id=entry_id, reason=_field(form, "reason", limit=256), delete=form.get("delete") == "on"))
        target = "/entries" if form.get("delete") == "on" else f"/entries/{entry_id}"
        raise self._back(target, message=f"revoked {len(reply.revocations)} SVID(s)")

    # -- agents ---------------------------------------------------------------------------------

    async def _agents(self, request: web.Request) -> web.StreamResponse:
        reply = await self._call(request, "ListAgents", admin_pb2.ListAgentsRequest(
            page_size=PAGE_SIZE, page_token=request.query.get("page", "")[:256]))
        now = int(self._ctx.clock.now().timestamp())
        return self._render(request, "agents.html", agents=list(reply.agents), next_page=reply.next_page_token,
                            now=now, message=request.query.get("message", "")[:300])

    async def _agent_action(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        action, agent_id = _field(form, "action"), _field(form, "spiffe_id")
        if action == "ban":
            await self._call(request, "BanAgent", admin_pb2.AgentRequest(spiffe_id=agent_id))
        elif action == "evict":
            await self._call(request, "EvictAgent", admin_pb2.AgentRequest(spiffe_id=agent_id))
        elif action == "revoke":
            await self._call(request, "RevokeAgent", admin_pb2.RevokeAgentRequest(
                spiffe_id=agent_id, reason=_field(form, "reason", limit=256)))
        else:
            raise web.HTTPBadRequest(text="action: must be ban, evict or revoke")
        raise self._back("/agents", message=f"agent {action}: done")

    # -- revocations ----------------------------------------------------------------------------

    async def _revocations(self, request: web.Request) -> web.StreamResponse:
        reply = await self._call(request, "ListRevocations", admin_pb2.ListRevocationsRequest(
            page_size=PAGE_SIZE, page_token=request.query.get("page", "")[:256]))
        return self._render(request, "revocations.html", revocations=list(reply.revocations),
                            next_page=reply.next_page_token, message=request.query.get("message", "")[:300])

    async def _revoke(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        kind, value, reason = _field(form, "kind"), _field(form, "value"), _field(form, "reason", limit=256)
        if kind == "serial":
            reply = await self._call(request, "RevokeSvid", admin_pb2.RevokeSvidRequest(x509_serial=value,
                                                                                        reason=reason))
        elif kind == "jti":
            reply = await self._call(request, "RevokeSvid", admin_pb2.RevokeSvidRequest(jwt_id=value, reason=reason))
        elif kind == "entry":
            reply = await self._call(request, "RevokeEntry", admin_pb2.RevokeEntryRequest(id=value, reason=reason))
        elif kind == "agent":
            reply = await self._call(request, "RevokeAgent", admin_pb2.RevokeAgentRequest(spiffe_id=value,
                                                                                         reason=reason))
        else:
            raise web.HTTPBadRequest(text="kind: must be serial, jti, entry or agent")
        raise self._back("/revocations", message=f"revoked {len(reply.revocations)} credential(s)")

    # -- audit ----------------------------------------------------------------------------------

    def _audit_query(self, request: web.Request) -> tuple[admin_pb2.ListAuditRequest, dict[str, str]]:
        q = request.query
        since_text = q.get("since", "")[:40]
        since = int((self._ctx.clock.now() - timedelta(minutes=10)).timestamp())
        if since_text:
            try:
                since = int(datetime.fromisoformat(since_text).replace(tzinfo=UTC).timestamp())
            except ValueError:
                raise web.HTTPBadRequest(text="since: must be a date and time like 2026-01-31T12:00") from None
        decision = q.get("decision", "")[:10]
        filters = {"since": since_text, "spiffe_id": q.get("spiffe_id", "")[:2048], "decision": decision,
                   "rule": q.get("rule", "")[:200]}
        return admin_pb2.ListAuditRequest(since=since, spiffe_id=filters["spiffe_id"], decision=decision,
                                          page_size=PAGE_SIZE * 2, page_token=q.get("page", "")[:40]), filters

    async def _audit(self, request: web.Request) -> web.StreamResponse:
        query, filters = self._audit_query(request)
        if any(filters.values()) or request.query.get("page"):
            reply = await self._call(request, "ListAudit", query)  # a search: oldest first from "since"
            records, next_page = [_record_view(r) for r in reply.records], reply.next_page_token
            order = "oldest first"
        else:  # no search: the newest records, after an admin read authorized the caller
            await self._call(request, "CountAgents", admin_pb2.CountRequest())
            recent = await self._ctx.call(self._ctx.store.list_audit_recent, None, limit=PAGE_SIZE * 2)
            records, next_page, order = [_record_view(r.record) for r in recent], "", "newest first"
        if filters["rule"]:
            records = [r for r in records if r.get("rule") == filters["rule"]]
        return self._render(request, "audit.html", records=records, next_page=next_page, filters=filters,
                            order=order)

    async def _audit_verify(self, request: web.Request) -> web.StreamResponse:
        """The chain verification state (a fragment the audit page loads with htmx, or a page of its own)."""
        result = await self._call(request, "VerifyAudit", admin_pb2.VerifyAuditRequest())
        checkpoint = await self._ctx.call(self._ctx.store.latest_audit_checkpoint)
        head = await self._ctx.call(self._ctx.store.list_audit_recent, None, limit=1)
        fragment = self._env.get_template("audit_verify.html").render(
            result=result, checkpoint=checkpoint, head=head[0] if head else None)
        return web.Response(text=fragment, content_type="text/html", charset="utf-8")

    async def _audit_series(self, request: web.Request) -> web.StreamResponse:
        """Denials per rule among the newest CHART_DENIALS denials of the last hour, for the audit page's chart."""
        await self._call(request, "CountAgents", admin_pb2.CountRequest())  # an admin read authorizes the caller
        since = self._ctx.clock.now() - CHART_WINDOW
        denials = await self._ctx.call(self._ctx.store.list_audit_recent, AuditFilter(since=since, decision="deny"),
                                       limit=CHART_DENIALS)
        counts = Counter(_record_view(r.record).get("rule") or "(no rule)" for r in denials)
        rules = sorted(counts, key=lambda k: -counts[k])[:20]
        return web.json_response({"rules": rules, "denials": [counts[r] for r in rules]})

    # -- policy ---------------------------------------------------------------------------------

    async def _policy(self, request: web.Request, whatif: dict[str, Any] | None = None) -> web.Response:
        # the policy file is the server's configuration, not datastore state: read it, as the admin
        # Health call does, after an admin read has authorized the caller
        await self._call(request, "CountAgents", admin_pb2.CountRequest())
        guard = self._ctx.guard
        policy = guard.policy
        if guard.policy_generation != self._policy_seen[0]:
            self._policy_seen = (guard.policy_generation, self._ctx.clock.now())
        return self._render(request, "policy.html", rules=policy.rules, source=policy.source,
                            generation=self._policy_seen[0], loaded=self._policy_seen[1],
                            approval=approval_rules(policy),
                            whatif=whatif or {})

    async def _whatif(self, request: web.Request) -> web.StreamResponse:
        """Evaluate a request document against the policy in force; nothing is issued or recorded."""
        await self._call(request, "CountAgents", admin_pb2.CountRequest())
        form = await request.post()
        values = {name: _field(form, name) for name in ("method", "spiffe_id", "audiences", "labels", "uid")}
        try:
            doc = build_input(
                now=self._ctx.clock.now(), method=values["method"] or "FetchJWTSVID",
                audiences=[a.strip() for a in values["audiences"].split(",") if a.strip()],
                workload=WorkloadFacts(spiffe_id=values["spiffe_id"] or None,
                                       uid=_int(values["uid"], "uid") if values["uid"] else None),
                entry=EntryFacts(spiffe_id=values["spiffe_id"] or None, labels=_labels(values["labels"])))
            decision = self._ctx.guard.policy.evaluate(doc)
        except (PolicyError, SpiffeError, ValueError) as err:
            return await self._policy(request, {**values, "error": str(err)[:300]})
        result = {"allowed": decision.allowed, "reason": decision.reason, "rule": decision.rule or "-",
                  "max_ttl": int(decision.max_ttl.total_seconds()) if decision.max_ttl else None}
        return await self._policy(request, {**values, "result": result})

    # -- approvals ------------------------------------------------------------------------------

    async def _approvals(self, request: web.Request) -> web.StreamResponse:
        reply = await self._call(request, "ListPendingApprovals", admin_pb2.ListPendingApprovalsRequest())
        grants = await self._ctx.call(self._ctx.store.list_label_grants)
        return self._render(request, "approvals.html", items=list(reply.items), grants=grants,
                            message=request.query.get("message", "")[:300])

    async def _approve(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        await self._call(request, "ApproveRequest", admin_pb2.ApproveRequestRequest(
            entry_id=_field(form, "entry_id"), rule=_field(form, "rule"),
            ttl=_int(_field(form, "ttl"), "ttl", 900), through_seq=_int(_field(form, "through_seq"), "through_seq")))
        raise self._back("/approvals", message="approved")

    async def _reject(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        await self._call(request, "RejectRequest", admin_pb2.RejectRequestRequest(
            entry_id=_field(form, "entry_id"), rule=_field(form, "rule"), reason=_field(form, "reason", limit=256),
            through_seq=_int(_field(form, "through_seq"), "through_seq")))
        raise self._back("/approvals", message="rejected")


def _san(leaf: x509.Certificate) -> str:
    try:
        uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        return "unknown"
    return uris[0] if uris else "unknown"


def session_of(console: Console, session_id: str) -> Session | None:
    """The session a cookie value opens (tests and benchmarks)."""
    return console.logins.session(session_id)

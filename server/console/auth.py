"""Console authentication state, pure: one-time login tokens, sessions and their CSRF tokens.

A login token is printed once (the start-up log line, or ``CreateConsoleLogin``), works once and
for ``LOGIN_TTL``; exchanging it creates a session whose id goes into an ``HttpOnly``,
``SameSite=Strict`` cookie. Only SHA-256 digests of tokens and session ids are kept, so a memory
dump or a log line of this state reveals nothing usable. Time comes from the injected clock::

    logins = LoginRegistry(base_url="http://127.0.0.1:8446", clock=clock)
    url, _ = logins.issue("admin", readonly=False)          # .../login?token=...
    session_id, session = logins.redeem(token)               # LoginError when unknown, used or expired
    logins.session(session_id)                               # None once expired
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote

from spiffe_py.clock import Clock
from spiffe_py.errors import AuthorizationError

LOGIN_TTL = timedelta(hours=24)
SESSION_TTL = timedelta(hours=12)
MAX_LOGINS = 100  # outstanding login tokens; the oldest is dropped beyond
MAX_SESSIONS = 1000
TOKEN_BYTES = 32


class LoginError(AuthorizationError):
    """A login token that is unknown, already used or expired (the message never holds the token)."""


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in console user: ``actor`` is what the audit trail records."""

    user: str
    readonly: bool
    csrf: str
    expires_at: datetime

    @property
    def actor(self) -> str:
        """``console:<user>``."""
        return f"console:{self.user}"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class _Login:
    user: str
    readonly: bool
    expires_at: datetime


class LoginRegistry:
    """One-time login links and the sessions they open, in memory (a restart logs everyone out)."""

    def __init__(self, *, base_url: str, clock: Clock) -> None:
        self._base_url = base_url.rstrip("/")
        self._clock = clock
        self._logins: dict[str, _Login] = {}
        self._sessions: dict[str, Session] = {}

    def issue(self, user: str, *, readonly: bool) -> tuple[str, datetime]:
        """A new one-time login URL for ``user`` and when it stops working."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        expires_at = self._clock.now() + LOGIN_TTL
        self._prune()
        while len(self._logins) >= MAX_LOGINS:
            self._logins.pop(next(iter(self._logins)))
        self._logins[_digest(token)] = _Login(user=user, readonly=readonly, expires_at=expires_at)
        return f"{self._base_url}/login?token={quote(token)}", expires_at

    def redeem(self, token: str) -> tuple[str, Session]:
        """Exchange a login token (once) for a new session: (session id for the cookie, session)."""
        now = self._clock.now()
        login = self._logins.pop(_digest(token), None) if 0 < len(token) <= 128 else None
        if login is None or login.expires_at <= now:
            raise LoginError("console: the login link is unknown, already used or expired")
        self._prune()
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.pop(next(iter(self._sessions)))
        session_id = secrets.token_urlsafe(TOKEN_BYTES)
        session = Session(user=login.user, readonly=login.readonly, csrf=secrets.token_urlsafe(TOKEN_BYTES),
                          expires_at=now + SESSION_TTL)
        self._sessions[_digest(session_id)] = session
        return session_id, session

    def session(self, session_id: str) -> Session | None:
        """The live session for a cookie value, or None."""
        if not 0 < len(session_id) <= 128:
            return None
        session = self._sessions.get(_digest(session_id))
        if session is None or session.expires_at <= self._clock.now():
            return None
        return session

    def logout(self, session_id: str) -> None:
        """End a session (unknown ids are ignored)."""
        self._sessions.pop(_digest(session_id), None)

    def _prune(self) -> None:
        now = self._clock.now()
        self._logins = {k: v for k, v in self._logins.items() if v.expires_at > now}
        self._sessions = {k: v for k, v in self._sessions.items() if v.expires_at > now}


def csrf_ok(expected: str, given: str | None) -> bool:
    """Constant-time comparison of the session's CSRF token with the one a form or header sent."""
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())

"""Who is asking: a bearer key or a login session, checked on every request but /healthz and the
login form (and /metrics with --metrics-public); CSRF tokens on forms; login rate limits.

Unauthenticated requests get 401 (JSON routes and /metrics) or a redirect to /login (pages).
Sessions are a random id in an HttpOnly, SameSite=Strict cookie (Secure: see cookie_secure); the
store keeps its SHA-256 with the user, an expiry and the session's CSRF token. The role is read from
the user on every request, so removing a user ends their access at once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from ..addr import is_loopback_host
from ..storage.base import Store
from .credentials import KEY_PREFIX, same, secret_hash

SESSION_COOKIE = "umbra_session"
LOGIN_COOKIE = "umbra_login"  # the login form's CSRF token (double submit), before any session
SESSION_SECONDS = 12 * 3600.0
Role = Literal["admin", "viewer"]


@dataclass(frozen=True)
class Identity:
    name: str  # the user, or "key:<id>" for a bearer key
    role: str
    csrf: str  # "" for bearer keys: they are not sent by browsers on their own, so no CSRF
    session_hash: str = ""

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def identify(store: Store, request: Request, now: float | None = None) -> Identity | None:
    """The caller, from `Authorization: Bearer KEY` or the session cookie; None if neither is valid."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() == "bearer" and key.strip():
        key = key.strip()
        if not key.startswith(KEY_PREFIX) or len(key) > 200:
            return None
        record = store.api_key(secret_hash(key))
        return Identity(f"key:{record.key_id}", record.role, "") if record else None
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if not cookie or len(cookie) > 200:
        return None
    digest = secret_hash(cookie)
    session = store.session(digest, time.time() if now is None else now)
    if session is None:
        return None
    return Identity(session.user, session.role, session.csrf, digest)


class LoginLimiter:
    """At most `attempts` failed logins per `window` seconds for one client address and for one
    user name (either limit refuses): a password guesser gets a handful of tries, not millions."""

    def __init__(self, attempts: int = 5, window: float = 300.0) -> None:
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._failures.setdefault(key, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def blocked(self, client: str, user: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            return any(len(self._recent(k, now)) >= self.attempts for k in (f"ip:{client}", f"user:{user}"))

    def failed(self, client: str, user: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._failures) > 100_000:  # bounded memory under a spray of names
                self._failures.clear()
            for k in (f"ip:{client}", f"user:{user}"):
                self._recent(k, now).append(now)

    def succeeded(self, user: str) -> None:
        with self._lock:
            self._failures.pop(f"user:{user}", None)


def is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/") or path == "/metrics"


class AuthMiddleware(BaseHTTPMiddleware):
    """Resolve the caller once per request (request.state.who); refuse the unauthenticated."""

    def __init__(self, app: object, store: Store, open_paths: frozenset[str]) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self.store = store
        self.open_paths = open_paths

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        path = request.url.path
        who = await run_in_threadpool(identify, self.store, request)
        request.state.who = who
        if who is None and path not in self.open_paths:
            if is_api(path):
                return JSONResponse(
                    {"error": "authentication required: a session or 'Authorization: Bearer KEY'"},
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="umbra"'},
                )
            target = path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        return await call_next(request)


def safe_next(target: str) -> str:
    """Where to go after login: a path on this site only (never //evil or an absolute URL)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target or "\n" in target:
        return "/"
    return target


def cookie_secure(request: Request) -> bool:
    """Whether the console's cookies carry Secure: always, but when the browser itself speaks plain
    HTTP to a loopback name (http://127.0.0.1, http://localhost). Safari drops Secure cookies there
    (WebKit bug 281149), so Secure would lock it out of the login form, and it guards nothing: such a
    cookie never crosses a network. A console behind a TLS proxy that forwards plain HTTP on
    loopback sees the public Host name and still sets Secure."""
    return request.url.scheme == "https" or not is_loopback_host(request.url.hostname or "")


def csrf_ok(who: Identity | None, submitted: str) -> bool:
    if who is None:
        return False
    if not who.csrf:  # a bearer key: not an ambient browser credential
        return True
    return bool(submitted) and same(submitted, who.csrf)


SECURITY_HEADERS = {
    # No script runs at all (the console has none); styles from the page itself; frames refused.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'none'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class HeadersMiddleware(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.scheme == "https":
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

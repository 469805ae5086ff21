"""The console's ASGI application: routes (pages, JSON API, login), authentication and security
headers put together."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..query.times import parse_duration
from ..reports import FORMATS, MEDIA_TYPES, build_report
from ..reports import render as render_report
from ..storage.base import Store
from .api import api_routes
from .auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    SESSION_SECONDS,
    AuthMiddleware,
    HeadersMiddleware,
    LoginLimiter,
    cookie_secure,
    csrf_ok,
    is_api,
    safe_next,
)
from .credentials import DUMMY_HASH, new_secret, same, secret_hash, verify_password
from .pages import page_routes
from .render import Renderer

log = logging.getLogger(__name__)

CSS = (Path(__file__).parent / "console.css").read_bytes()
NAV = [
    ("/", "Overview", False),
    ("/hosts", "Hosts", False),
    ("/findings", "Findings", False),
    ("/models", "Models", False),
    ("/tools", "AI tools", False),
    ("/policy", "Policy", False),
    ("/enrollment", "Enrollment", True),
]


def report_route(store: Store) -> Callable[[Request], Response]:
    """GET /report?format=html|pdf|csv|json&since=30d: the fleet report as a download (since= empty:
    all time), built and rendered by collector.reports as `umbra-collector report` does."""

    def download(request: Request) -> Response:
        fmt = request.query_params.get("format", "html")
        if fmt not in FORMATS:
            return Response(f"format must be {', '.join(FORMATS[:-1])} or {FORMATS[-1]}", status_code=400)
        since_text = request.query_params.get("since", "30d")
        try:
            since = parse_duration(since_text) if since_text else None
        except ValueError as exc:
            return Response(str(exc), status_code=400)
        data = render_report(build_report(store, since), fmt)
        name = f"umbra-report-{time.strftime('%Y%m%d')}.{fmt}"
        return Response(
            data,
            media_type=MEDIA_TYPES[fmt],
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    return download


def build_app(
    store: Store,
    *,
    health: Callable[[], dict[str, Any]],
    metrics: Callable[[], tuple[bytes, str]] | None = None,
    silent_after: float = 300.0,
    metrics_public: bool = False,
    token_pin: str | None = None,
    limiter: LoginLimiter | None = None,
) -> Starlette:
    render = Renderer(NAV)
    limiter = limiter or LoginLimiter()

    def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None) -> None:
        response.set_cookie(
            name, value, max_age=max_age, path="/", secure=cookie_secure(request), httponly=True,
            samesite="strict",
        )  # fmt: skip

    def login_form(request: Request, status: int = 200, error: str = "") -> Response:
        token = request.cookies.get(LOGIN_COOKIE, "")
        if not token or len(token) > 100:
            token = new_secret()
        response = render.page(
            request,
            "login.html",
            status,
            title="Sign in",
            csrf=token,
            error=error,
            next=safe_next(request.query_params.get("next", "/")),
        )
        set_cookie(request, response, LOGIN_COOKIE, token, 3600)
        return response

    def login_get(request: Request) -> Response:
        return login_form(request)

    async def login_post(request: Request) -> Response:
        form = await request.form()
        name, password = str(form.get("username", ""))[:64], str(form.get("password", ""))
        submitted, cookie = str(form.get("csrf", "")), request.cookies.get(LOGIN_COOKIE, "")
        if not submitted or not cookie or not same(submitted, cookie):
            return login_form(request, 403, "The form expired; please sign in again.")
        client = request.client.host if request.client else "?"
        if limiter.blocked(client, name):
            log.warning("login refused (rate limit) for %r from %s", name, client)
            return login_form(request, 429, "Too many failed sign-ins; wait a few minutes.")
        user = await run_in_threadpool(store.user, name)
        ok = await run_in_threadpool(verify_password, password, user.password_hash if user else DUMMY_HASH)
        if user is None or not ok:
            limiter.failed(client, name)
            log.warning("failed login for %r from %s", name, client)
            return login_form(request, 401, "Wrong user name or password.")
        limiter.succeeded(name)
        session = new_secret()
        await run_in_threadpool(
            store.create_session, secret_hash(session), user.name, new_secret(), time.time() + SESSION_SECONDS
        )
        log.info("%s signed in from %s", user.name, client)
        response = RedirectResponse(safe_next(str(form.get("next", "/"))), status_code=303)
        set_cookie(request, response, SESSION_COOKIE, session, int(SESSION_SECONDS))
        response.delete_cookie(LOGIN_COOKIE, path="/", secure=cookie_secure(request), samesite="strict")
        return response

    async def logout(request: Request) -> Response:
        who = request.state.who
        form = await request.form()
        if not csrf_ok(who, str(form.get("csrf", ""))):
            return render.page(request, "error.html", 403, title="Forbidden", message="Bad CSRF token.")
        if who is not None and who.session_hash:
            await run_in_threadpool(store.delete_session, who.session_hash)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(
            SESSION_COOKIE, path="/", secure=cookie_secure(request), httponly=True, samesite="strict"
        )
        return response

    def css(request: Request) -> Response:
        return Response(CSS, media_type="text/css", headers={"Cache-Control": "max-age=3600"})

    routes: list[BaseRoute] = [
        Route("/login", login_get, methods=["GET"]),
        Route("/login", login_post, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/console.css", css, methods=["GET"]),
        *api_routes(store, health, metrics, silent_after),
        *page_routes(store, render, silent_after, token_pin),
        Route("/report", report_route(store), methods=["GET"]),
    ]
    open_paths = {"/healthz", "/login", "/console.css"}
    if metrics_public:
        open_paths.add("/metrics")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {404: f"no such resource {request.url.path}", 405: "method not allowed"}.get(
            exc.status_code, str(exc.detail)
        )
        if is_api(request.url.path) or "text/html" not in request.headers.get("accept", ""):
            return JSONResponse({"error": message}, status_code=exc.status_code)
        return render.page(request, "error.html", exc.status_code, title="Not here", message=message)

    app = Starlette(
        exception_handlers={HTTPException: http_error},
        routes=routes,
        middleware=[
            Middleware(HeadersMiddleware),
            Middleware(AuthMiddleware, store=store, open_paths=frozenset(open_paths)),
        ],
    )
    app.state.open_paths = frozenset(open_paths)
    return app

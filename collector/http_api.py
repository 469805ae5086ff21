"""A small read-only JSON API (stdlib http.server in a daemon thread) until the web console lands.

GET /healthz, /metrics (Prometheus), /api/fleet, /api/hosts, /api/risk, /api/findings, /api/services,
/api/runtimes, /api/models, /api/compute, /api/transfers, /api/silent, /api/trend, /api/inventory.
Every route calls the query layer; nothing here reads the store itself, and nothing writes.

/api/findings takes host, kind (comma-separated), severity, user, service, vendor, runtime, sha256,
approved (true/false), since and until (a duration back from now: 30d, 12h), limit and cursor; the
body is a list, and the next page's cursor is in the X-Next-Cursor header (absent on the last page).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from .addr import format_addr, is_loopback_host, parse_addr
from .query import activity, snapshots
from .query.documents import fleet_view, hosts_view
from .query.findings import BadQuery, finding_filter, list_findings
from .query.risk import risk_board
from .query.times import parse_duration
from .storage.base import Store
from .storage.reads import FindingFilter

log = logging.getLogger(__name__)

MAX_LIMIT = 100_000


class _BadRequest(ValueError):
    pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    store: Store
    health: Callable[[], dict[str, Any]]
    metrics: Callable[[], tuple[bytes, str]] | None
    silent_after: float


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "umbra-collector"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s " + format, self.client_address[0], *args)

    def _send(self, status: HTTPStatus, data: bytes, content_type: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_json(self, status: HTTPStatus, body: Any, headers: dict[str, str] | None = None) -> None:
        self._send(
            status, json.dumps(body, separators=(",", ":")).encode(), "application/json", headers or {}
        )

    def _findings(self, q: dict[str, str]) -> Any:
        limit = _limit(q, 1000)
        if limit == 0:
            return []
        result = list_findings(self.server.store, _filter(q), limit, q.get("cursor") or None)
        if result.cursor is not None:
            self._headers["X-Next-Cursor"] = result.cursor
        return result.findings

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self._headers: dict[str, str] = {}
        store = self.server.store
        if url.path == "/metrics" and self.server.metrics is not None:
            data, content_type = self.server.metrics()
            self._send(HTTPStatus.OK, data, content_type, {})
            return
        routes: dict[str, Callable[[dict[str, str]], Any]] = {
            "/healthz": lambda q: self.server.health(),
            "/api/fleet": lambda q: fleet_view(store, _limit(q, 100)),
            "/api/hosts": lambda q: hosts_view(store),
            "/api/risk": lambda q: risk_board(store, _limit(q, 10)).to_dict(),
            "/api/findings": self._findings,
            "/api/services": lambda q: [r.to_dict() for r in activity.services(store, _since(q))],
            "/api/runtimes": lambda q: [r.to_dict() for r in activity.runtimes(store, _since(q))],
            "/api/models": lambda q: [r.to_dict() for r in activity.census(store, _limit(q, 100) or 1)],
            "/api/compute": lambda q: [r.to_dict() for r in activity.compute(store, _since(q))],
            "/api/transfers": lambda q: [r.to_dict() for r in activity.transfers(store, _since(q))],
            "/api/silent": lambda q: [
                s.to_dict() for s in activity.silent_hosts(store, self.server.silent_after)
            ],
            "/api/trend": lambda q: [
                r.to_dict()
                for r in snapshots.trend(store, _scope(q), q.get("key", ""), int(_limit(q, 30, "days")))
            ],
            "/api/inventory": lambda q: {
                "inventories": [i.to_dict() for i in store.inventories(q.get("host") or None)]
            },
        }
        route = routes.get(url.path.rstrip("/") or "/")
        if route is None:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such resource {url.path}"})
            return
        try:
            body = route(query)
        except (_BadRequest, BadQuery, ValueError) as exc:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        except Exception:
            log.exception("http %s failed", url.path)
            self._send_json(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error, see the collector log"}
            )
            return
        self._send_json(HTTPStatus.OK, body, self._headers)

    def _refuse(self) -> None:
        self._send_json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "read-only API: GET only"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse


def _limit(query: dict[str, str], default: int, name: str = "limit") -> int:
    text = query.get(name, "")
    if not text:
        return default
    if not text.isdigit() or not 0 <= int(text) <= MAX_LIMIT:
        raise _BadRequest(f"{name} must be an integer 0..{MAX_LIMIT}")
    return int(text)


def _ago(query: dict[str, str], name: str) -> float | None:
    text = query.get(name, "")
    return time.time() - parse_duration(text) if text else None


def _since(query: dict[str, str]) -> float | None:
    return _ago(query, "since")


def _scope(query: dict[str, str]) -> Literal["host", "user", "fleet"]:
    scope = query.get("scope", "fleet")
    if scope not in ("host", "user", "fleet"):
        raise _BadRequest("scope must be host, user or fleet")
    return scope  # type: ignore[return-value]


def _filter(q: dict[str, str]) -> FindingFilter:
    approved = q.get("approved", "")
    if approved not in ("", "true", "false"):
        raise _BadRequest("approved must be true or false")
    return finding_filter(
        kinds=tuple(k for k in q.get("kind", "").split(",") if k),
        severities=tuple(s for s in q.get("severity", "").split(",") if s),
        host=q.get("host"),
        user=q.get("user"),
        service=q.get("service"),
        vendor=q.get("vendor"),
        runtime=q.get("runtime"),
        sha256=q.get("sha256"),
        approved=None if not approved else approved == "true",
        since=_since(q),
        until=_ago(q, "until"),
    )


class HttpApi:
    """The API server, running in its own daemon thread until `close()`."""

    def __init__(
        self,
        store: Store,
        addr: str,
        health: Callable[[], dict[str, Any]] | None = None,
        *,
        metrics: Callable[[], tuple[bytes, str]] | None = None,
        silent_after: float = 300.0,
    ) -> None:
        host, port = parse_addr(addr)
        cls = _IPv6Server if ":" in host else _Server
        self._httpd = cls((host, port), _Handler)
        self._httpd.store = store
        self._httpd.health = health or (lambda: {"status": "ok"})
        self._httpd.metrics = metrics
        self._httpd.silent_after = silent_after
        self.host = host
        self.port: int = self._httpd.server_address[1]
        if not is_loopback_host(host):
            log.warning(
                "HTTP API on %s has no authentication yet; anyone who reaches it reads findings", addr
            )
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="umbra-http", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return format_addr(self.host, self.port)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

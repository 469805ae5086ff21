"""A small read-only JSON API (stdlib http.server in a daemon thread) until the web console lands.

GET /healthz, /api/fleet, /api/hosts, /api/findings?host=&kind=&limit=. Nothing here writes.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .addr import format_addr, is_loopback_host, parse_addr
from .storage.base import Store
from .views import fleet_view, hosts_view

log = logging.getLogger(__name__)

MAX_LIMIT = 100_000


class _BadRequest(ValueError):
    pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    store: Store
    health: Callable[[], dict[str, Any]]


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "umbra-collector"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s " + format, self.client_address[0], *args)

    def _send_json(self, status: HTTPStatus, body: Any) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        routes: dict[str, Callable[[dict[str, str]], Any]] = {
            "/healthz": lambda q: self.server.health(),
            "/api/fleet": lambda q: fleet_view(self.server.store, _limit(q, 100)),
            "/api/hosts": lambda q: hosts_view(self.server.store),
            "/api/findings": lambda q: self.server.store.findings(
                host_id=q.get("host") or None, kind=q.get("kind") or None, limit=_limit(q, 1000)
            ),
            "/api/inventory": lambda q: {
                "inventories": [i.to_dict() for i in self.server.store.inventories(q.get("host") or None)]
            },
        }
        route = routes.get(url.path.rstrip("/") or "/")
        if route is None:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such resource {url.path}"})
            return
        try:
            body = route(query)
        except (_BadRequest, ValueError) as exc:
            self._send_json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        except Exception:
            log.exception("http %s failed", url.path)
            self._send_json(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error, see the collector log"}
            )
            return
        self._send_json(HTTPStatus.OK, body)

    def _refuse(self) -> None:
        self._send_json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "read-only API: GET only"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse


def _limit(query: dict[str, str], default: int) -> int:
    text = query.get("limit", "")
    if not text:
        return default
    if not text.isdigit() or not 0 <= int(text) <= MAX_LIMIT:
        raise _BadRequest(f"limit must be an integer 0..{MAX_LIMIT}")
    return int(text)


class HttpApi:
    """The API server, running in its own daemon thread until `close()`."""

    def __init__(self, store: Store, addr: str, health: Callable[[], dict[str, Any]] | None = None) -> None:
        host, port = parse_addr(addr)
        cls = _IPv6Server if ":" in host else _Server
        self._httpd = cls((host, port), _Handler)
        self._httpd.store = store
        self._httpd.health = health or (lambda: {"status": "ok"})
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

"""The console's server: uvicorn in its own thread and event loop, so page rendering never delays
the gRPC ingest loop, with HTTPS when a certificate is given (the collector gives its own when the
console listens beyond loopback)."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn

from ..addr import format_addr, is_loopback_host, parse_addr
from ..storage.base import Store
from .app import build_app

log = logging.getLogger(__name__)


class ConsoleServer:
    """The console and JSON API, served until `close()`. Binds in the constructor (OSError if it
    cannot), so the caller learns the port (port 0: any free one) and a clash at once."""

    def __init__(
        self,
        store: Store,
        addr: str,
        health: Callable[[], dict[str, Any]] | None = None,
        *,
        metrics: Callable[[], tuple[bytes, str]] | None = None,
        silent_after: float = 300.0,
        metrics_public: bool = False,
        cert: tuple[Path, Path] | None = None,
        token_pin: str | None = None,
    ) -> None:
        host, port = parse_addr(addr)
        if cert is None and not is_loopback_host(host):
            raise ValueError(f"the console on {addr} is beyond loopback: it needs HTTPS (a certificate)")
        self.host = host
        self.tls = cert is not None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((host, port))
            self._sock.listen(128)
        except OSError:
            self._sock.close()
            raise
        self.port: int = self._sock.getsockname()[1]
        app = build_app(
            store,
            health=health or (lambda: {"status": "ok"}),
            metrics=metrics,
            silent_after=silent_after,
            metrics_public=metrics_public,
            token_pin=token_pin,
        )
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            # The console faces browsers itself: X-Forwarded-For from a local client is not trusted,
            # or anyone on the host could pick the address the login rate limit counts.
            proxy_headers=False,
            ssl_certfile=str(cert[0]) if cert else None,
            ssl_keyfile=str(cert[1]) if cert else None,
            timeout_graceful_shutdown=2,
        )
        try:
            config.load()  # a bad certificate or key fails here, in the caller's thread
        except Exception:
            self._sock.close()
            raise
        self._server = uvicorn.Server(config)
        # Off the main thread uvicorn installs no signal handlers: the collector keeps its own.
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="umbra-console", daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> str:
        return format_addr(self.host, self.port)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

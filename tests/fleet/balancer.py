"""A TCP load balancer for the scale-out tests: what HAProxy's `mode tcp` with `balance roundrobin`
does in front of several collectors (README), small enough to read. Each new client connection
goes to the next backend in turn; a backend that refuses the connection is skipped, so when a
collector dies its agents' reconnects land on the others. Bytes are relayed untouched (the TLS
session is between the agent and the collector)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter


class Balancer(threading.Thread):
    def __init__(self, backends: list[str]) -> None:
        super().__init__(daemon=True)
        self.backends = backends
        self.connections: Counter[str] = Counter()  # accepted connections relayed, per backend
        self.address = ""
        self._next = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Event | None = None
        self.start()
        if not self._ready.wait(10):
            raise AssertionError("balancer did not start")

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()[:2]
        self.address = f"{host}:{port}"
        self._ready.set()
        async with server:
            await self._done.wait()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(len(self.backends)):
            backend = self.backends[self._next % len(self.backends)]
            self._next += 1
            host, _, port = backend.rpartition(":")
            try:
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
            except OSError:
                continue  # that collector is down: the next one
            self.connections[backend] += 1
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            return
        writer.close()

    def close(self) -> None:
        if self._loop is not None and self._done is not None:
            self._loop.call_soon_threadsafe(self._done.set)
        self.join(10)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()

"""`serve`: the PKI, the listeners, and one collector process or a supervisor of several."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import logging
import os
import signal
import sys
from pathlib import Path

from umbra.private import sqlite_files, tighten

from .. import pki
from ..addr import format_addr, is_loopback_host, parse_addr
from ..ingest import CollectorServer, ServerTLS, serve
from ..storage import Store, StoreURLError, open_store, redact_url, sqlite_path, store_url
from ..storage.retention import retention_loop
from ..workers import supervise
from .common import EXIT_OK, PROG, UsageError

log = logging.getLogger(__name__)


def default_pki_dir(db_url: str) -> Path:
    """umbra-pki/ beside the SQLite file (the working directory for other stores)."""
    try:
        path = sqlite_path(store_url(db_url))
    except StoreURLError:
        return Path("umbra-pki")
    if path == ":memory:":
        return Path("umbra-pki")
    return Path(path).resolve().parent / "umbra-pki"


def _enroll_addr(args: argparse.Namespace) -> str:
    if args.enroll is not None:
        return str(args.enroll)
    host, port = parse_addr(args.grpc)
    return format_addr(host, port + 1 if 0 < port < 65535 else 0)


def _server_tls(args: argparse.Namespace) -> ServerTLS | None:
    if args.insecure:
        return None
    if args.allow_insecure_remote:
        raise UsageError("--allow-insecure-remote needs --insecure (with TLS, agents prove who they are)")
    pki_dir = args.pki_dir or default_pki_dir(args.db)
    identity = pki.load_or_create(
        pki_dir, ca_cert=args.ca_cert, ca_key=args.ca_key, server_names=args.tls_name
    )
    return ServerTLS(
        identity=identity,
        enroll_addr=_enroll_addr(args),
        agent_validity=dt.timedelta(seconds=args.agent_cert_ttl),
        advertise=args.advertise,
    )


def _http_cert(args: argparse.Namespace) -> tuple[Path, Path] | None:
    """The console's certificate: the one given, else the collector's own when --http listens beyond
    loopback (HTTPS there; plain HTTP only on loopback)."""
    if (args.http_cert is None) != (args.http_key is None):
        raise UsageError("give both --http-cert and --http-key, or neither")
    if args.http_cert is not None:
        return Path(args.http_cert), Path(args.http_key)
    if args.http is None or is_loopback_host(parse_addr(args.http)[0]):
        return None
    pki_dir = args.pki_dir or default_pki_dir(args.db)
    pki.load_or_create(pki_dir, ca_cert=args.ca_cert, ca_key=args.ca_key, server_names=args.tls_name)
    return pki_dir / pki.SERVER_CERT, pki_dir / pki.SERVER_KEY


async def _run_server(store: Store, args: argparse.Namespace, url: str, tls: ServerTLS | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: fall back to plain handlers
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))

    def listening(server: CollectorServer) -> None:
        print(
            f"{PROG}: listening grpc={server.grpc_address} http={server.http_address or 'off'} "
            f"enroll={server.enroll_address or 'off'} tls={'on' if tls else 'off'} store={redact_url(url)}",
            file=sys.stderr,
            flush=True,
        )

    worker = args.worker_index
    # Runs beside the server; asyncio.run cancels it when serve returns.
    retention = None
    if args.retention is not None and worker in (None, 0):
        retention = asyncio.create_task(retention_loop(store, args.retention, stop))
    await serve(
        store,
        args.grpc,
        None if args.no_http else args.http,
        stop=stop,
        on_listening=listening,
        tls=tls,
        reuse_port=worker is not None,
        primary=worker in (None, 0),
        stats_dir=args.stats_dir,
        worker_name=str(worker or 0),
        allow_insecure_remote=args.allow_insecure_remote,
        grace=args.grace,
        silent_after=args.silent_after,
        monitor_interval=args.monitor_interval,
        max_streams_per_host=args.max_streams_per_host,
        metrics_public=args.metrics_public,
        http_cert=_http_cert(args),
    )
    del retention


def private_paths(args: argparse.Namespace) -> list[Path]:
    """What the collector keeps that only its user may read: the SQLite file (with its -wal, -shm
    and writer lock), the PKI directory and its keys and certificates, an operator's CA key."""
    paths = [*pki.private_paths(args.pki_dir or default_pki_dir(args.db))]
    if args.ca_key is not None:
        paths.append(Path(args.ca_key))
    try:
        db = sqlite_path(args.db)
    except StoreURLError:  # PostgreSQL keeps its own files
        return paths
    if db != ":memory:":
        paths += [*sqlite_files(Path(db)), Path(f"{db}.writer-lock")]
    return paths


#: Net growth in container objects before a cycle collection. Ingest allocates a row tuple per
#: finding and keeps it until its group commit: at Python's default (700) every collection
#: re-walks the batches in flight, 8 % of the collector's CPU at 100,000 findings/s. Rows die by
#: reference count, so in a steady state the count stays low and collections follow real growth.
GC_THRESHOLD = 100_000


def tune_gc() -> None:
    """Freeze what start-up built (modules, the PKI, the store) out of every collection, and
    collect after GC_THRESHOLD new objects outlive their batch instead of every 700."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD, older, oldest)


def cmd_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.umask(0o077)  # whatever serve creates (database, keys, worker stats) is its user's alone
    tighten(private_paths(args), log)
    if args.workers > 1 and args.worker_index is None:
        _server_tls(args)  # create the PKI once, before the workers load it
        open_store(args.db, create=True).close()  # create or migrate the database once
        return supervise(args, list(sys.argv[1:] if args.argv is None else args.argv), PROG)
    tls = _server_tls(args)
    store = open_store(args.db, create=True)
    tune_gc()
    try:
        asyncio.run(_run_server(store, args, args.db, tls))
    finally:
        store.close()
    return EXIT_OK

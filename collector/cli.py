"""`umbra-collector`: run the collector, and look at what it stored.

Exit status: 0 success, 1 runtime failure (database unusable, port taken), 2 usage error.
Every failure is one line on stderr starting "umbra-collector: error:", never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import sys
import textwrap
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from umbra import codec
from umbra.table import Column, render_table, terminal_width

from . import pki
from .addr import format_addr, parse_addr
from .policy import PolicyError, load_file
from .server import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_MAX_STREAMS_PER_HOST,
    DEFAULT_MONITOR_INTERVAL,
    DEFAULT_SILENT_AFTER,
    BindError,
    CollectorServer,
    ServerTLS,
    serve,
)
from .storage import DEFAULT_DB_URL, Store, StoreError, StoreURLError, open_store, redact_url, sqlite_path
from .storage.retention import retention_loop
from .views import fleet_view, hosts_view, iso_seconds
from .workers import supervise

PROG = "umbra-collector"
DEFAULT_GRPC_ADDR = "127.0.0.1:50051"
EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input found after parsing (e.g. a --db URL no backend takes): exit 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and a hint), not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (try '{self.prog} --help')\n")


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


# ---- argument types: a ValueError/ArgumentTypeError becomes a one-line usage error


def _addr(text: str) -> str:
    try:
        parse_addr(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _kind(text: str) -> str:
    try:
        return codec.kind_name(codec.kind_value(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """ "90" or "90s", "15m", "24h", "30d" -> seconds. ValueError if malformed or not positive."""
    raw = text.strip().lower()
    unit = _UNITS.get(raw[-1:], 0.0)
    number = raw[:-1] if unit else raw
    try:
        value = float(number) * (unit or 1.0)
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (e.g. 90s, 15m, 24h, 30d)") from None
    if not 0 < value < 100 * 365 * 86400:
        raise ValueError(f"duration out of range: {text!r}")
    return value


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 3600.0:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, 3600], got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 3600.0:
        raise argparse.ArgumentTypeError(f"expected seconds between 0 and 3600, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Umbra collector: receives findings from umbra-agent over gRPC, stores them, "
        "scores risk per host and per fleet.",
        epilog=f"Database URLs: sqlite:///relative/path.db, sqlite:////absolute/path.db (default "
        f"{DEFAULT_DB_URL}, i.e. ./umbra-collector.db); postgresql://... is reserved for a later version. "
        "Exit status: 0 ok, 1 runtime error, 2 usage error.",
    )
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, help="what to do ('COMMAND --help' for its options)"
    )

    db = _Parser(add_help=False)
    db.add_argument(
        "--db",
        metavar="URL",
        default=DEFAULT_DB_URL,
        help=f"collector database (default {DEFAULT_DB_URL}: ./umbra-collector.db in the working "
        "directory; sqlite:////abs/path.db for an absolute path)",
    )
    fmt = _Parser(add_help=False)
    fmt.add_argument(
        "--format", choices=("table", "json"), default="table", help="output format (default table)"
    )

    pki_opts = _Parser(add_help=False)
    pki_opts.add_argument(
        "--pki-dir",
        metavar="DIR",
        type=Path,
        default=None,
        help="where the collector keeps its CA and server certificate (default: umbra-pki/ beside the "
        "SQLite database); created on first start",
    )
    pki_opts.add_argument(
        "--ca-cert",
        metavar="FILE",
        type=Path,
        default=None,
        help="use this CA certificate (PEM) instead of the collector's own; with --ca-key",
    )
    s = sub.add_parser(
        "serve",
        parents=[db, pki_opts],
        help="run the collector until SIGTERM/SIGINT",
        description="Run the collector: accept agent streams on --grpc, store findings in --db, "
        "optionally serve the read-only JSON API on --http. Prints 'listening grpc=HOST:PORT' on "
        "stderr once bound (the real port when given port 0). SIGTERM or SIGINT stops it gracefully: "
        "no new streams, in-flight batches are stored and acked, the database is closed.",
    )
    s.add_argument(
        "--grpc",
        metavar="ADDR",
        type=_addr,
        default=DEFAULT_GRPC_ADDR,
        help=f"gRPC listen address HOST:PORT, [V6]:PORT for IPv6, port 0 for any free port "
        f"(default {DEFAULT_GRPC_ADDR})",
    )
    s.add_argument(
        "--http",
        metavar="ADDR",
        type=_addr,
        default=None,
        help="also serve the read-only JSON API (/api/fleet, /api/hosts, /api/findings, /healthz) "
        "on HOST:PORT (default: off)",
    )
    s.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="log verbosity on stderr (default info)",
    )
    s.add_argument(
        "--grace",
        metavar="SECONDS",
        type=_seconds,
        default=DEFAULT_GRACE_SECONDS,
        help=f"at shutdown, how long open agent streams may still finish (default {DEFAULT_GRACE_SECONDS:g})",
    )
    s.add_argument(
        "--insecure",
        action="store_true",
        help="development mode: plain gRPC without TLS and without enrollment; only agents on this "
        "machine (loopback) are accepted, and the host id their Hello claims is trusted",
    )
    s.add_argument(
        "--allow-insecure-remote",
        action="store_true",
        help="with --insecure: accept agents from other machines too, trusting the host id they claim "
        "(development only)",
    )
    s.add_argument(
        "--enroll",
        metavar="ADDR",
        type=_addr,
        default=None,
        help="enrollment listener HOST:PORT (TLS, no client certificate: agents trade a token for a "
        "certificate here); default: the --grpc host, port + 1 (port 0 when --grpc has port 0)",
    )
    s.add_argument(
        "--ca-key",
        metavar="FILE",
        type=Path,
        default=None,
        help="the private key (PEM, unencrypted) of --ca-cert",
    )
    s.add_argument(
        "--tls-name",
        metavar="NAME",
        action="append",
        default=[],
        help="a DNS name or IP address to add to the collector's server certificate (repeatable); agents "
        "verify the name umbra-collector, which is always there",
    )
    s.add_argument(
        "--advertise",
        metavar="ADDR",
        type=_addr,
        default=None,
        help="the stream address HOST:PORT enrolled agents are told to use (default: the host they enrolled "
        "at, with the --grpc port); set it behind a load balancer",
    )
    s.add_argument(
        "--agent-cert-ttl",
        metavar="DURATION",
        type=_duration,
        default=30 * 86400.0,
        help="validity of the certificates issued to agents, e.g. 30d, 12h (default 30d); agents renew "
        "when a third of it is left",
    )
    s.add_argument(
        "--silent-after",
        metavar="DURATION",
        type=_duration,
        default=DEFAULT_SILENT_AFTER,
        help=f"mark a host silent (an AGENT_HEALTH finding) after this long without contact "
        f"(default {DEFAULT_SILENT_AFTER:g}s)",
    )
    s.add_argument(
        "--monitor-interval",
        metavar="SECONDS",
        type=_positive_seconds,
        default=DEFAULT_MONITOR_INTERVAL,
        help=f"how often to look for silent hosts, revocations and a new policy "
        f"(default {DEFAULT_MONITOR_INTERVAL:g})",
    )
    s.add_argument(
        "--workers",
        metavar="N",
        type=_positive_int,
        default=1,
        help="collector processes sharing the listening ports (SO_REUSEPORT; the kernel spreads agents "
        "over them), to use several cores for ingest (default 1); --max-streams-per-host then holds per "
        "process",
    )
    s.add_argument(
        "--retention",
        metavar="DURATION",
        type=_duration,
        default=None,
        help="forget findings not seen for this long, e.g. 90d (checked at start and hourly; PostgreSQL "
        "drops whole day partitions); default: keep everything",
    )
    s.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    s.add_argument("--stats-dir", type=Path, default=None, help=argparse.SUPPRESS)
    s.add_argument("--no-http", action="store_true", help=argparse.SUPPRESS)
    s.add_argument(
        "--max-streams-per-host",
        metavar="N",
        type=_positive_int,
        default=DEFAULT_MAX_STREAMS_PER_HOST,
        help=f"open streams one agent identity may hold at once (default {DEFAULT_MAX_STREAMS_PER_HOST}); "
        "more are refused with RESOURCE_EXHAUSTED",
    )

    tok = sub.add_parser(
        "token",
        help="enrollment tokens: create, list",
        description="Enrollment tokens: an agent trades one for its client certificate (umbra-agent enroll).",
    )
    tok_sub = tok.add_subparsers(
        dest="action", metavar="ACTION", required=True, help="what to do ('ACTION --help' for its options)"
    )
    tc = tok_sub.add_parser(
        "create",
        parents=[db, pki_opts],
        help="mint a token and print it",
        description="Mint an enrollment token and print it on stdout. The token carries the CA's "
        "fingerprint, so the agent can check the collector it reaches. Only its hash is stored.",
    )
    tc.add_argument(
        "--ttl",
        metavar="DURATION",
        type=_duration,
        default=86400.0,
        help="how long the token is valid, e.g. 15m, 24h, 7d (default 24h)",
    )
    tc.add_argument(
        "--uses",
        metavar="N",
        type=_positive_int,
        default=1,
        help="how many enrollments it allows (default 1)",
    )
    tc.add_argument("--note", metavar="TEXT", default="", help="a note kept with the token (who it is for)")
    tok_sub.add_parser(
        "list",
        parents=[db, fmt],
        help="list tokens (hashes, expiry, uses left)",
        description="List enrollment tokens: hash prefix, created, expires, uses left. "
        "The tokens themselves are never stored, so never shown.",
    )

    ag = sub.add_parser(
        "agent",
        help="enrolled agents: list, revoke",
        description="Enrolled agents and their certificates.",
    )
    ag_sub = ag.add_subparsers(
        dest="action", metavar="ACTION", required=True, help="what to do ('ACTION --help' for its options)"
    )
    ag_sub.add_parser(
        "list",
        parents=[db, fmt],
        help="list enrolled agents",
        description="List enrolled agents: host id, host name, enrolled, certificate expiry, revoked.",
    )
    ar = ag_sub.add_parser(
        "revoke",
        parents=[db],
        help="revoke an agent: its streams end and it cannot connect or renew again",
        description="Revoke an agent for good. A running collector ends its streams within "
        "--monitor-interval and refuses it from then on (PERMISSION_DENIED).",
    )
    ar.add_argument("host_id", metavar="HOST_ID", help="the agent's host id (see 'agent list')")

    po = sub.add_parser(
        "policy",
        help="the fleet policy: set, show",
        description="The versioned fleet policy the collector pushes to every agent.",
    )
    po_sub = po.add_subparsers(
        dest="action", metavar="ACTION", required=True, help="what to do ('ACTION --help' for its options)"
    )
    ps = po_sub.add_parser(
        "set",
        parents=[db],
        help="store a policy file as the next version",
        description="Validate a policy TOML file (approved_runtimes, approved_services, "
        "approved_model_hashes, watched_paths, [thresholds] min_confidence, upload_bytes) and store it as "
        "the next version; running collectors push it to their agents within --monitor-interval.",
    )
    ps.add_argument("file", metavar="FILE", type=Path, help="the policy file (TOML)")
    po_sub.add_parser(
        "show",
        parents=[db, fmt],
        help="print the current policy",
        description="Print the current policy version and its content.",
    )

    h = sub.add_parser(
        "hosts",
        parents=[db, fmt],
        help="list known hosts with their risk",
        description="List every host that contacted the collector, with sensors, last contact, "
        "stored batch sequence, findings and risk. JSON: one document {'hosts': [...]}.",
    )
    h.set_defaults(limit=None)

    f = sub.add_parser(
        "findings",
        parents=[db, fmt],
        help="list stored findings, newest first",
        description="List stored findings, newest last_seen first. JSON: one finding object per line "
        "(the same shape as umbra-agent scan --format json).",
    )
    f.add_argument("--host", metavar="ID", default=None, help="only findings of this host id")
    f.add_argument(
        "--kind",
        metavar="KIND",
        type=_kind,
        default=None,
        help=f"only findings of this kind, one of: {', '.join(codec.KIND_NAMES)}",
    )
    f.add_argument("--limit", metavar="N", type=_count, default=100, help="at most N findings (default 100)")

    inv = sub.add_parser(
        "inventory",
        parents=[db, fmt],
        help="list the model files each host reported on its disks",
        description="The newest inventory of every host: its model files (path, format, size, "
        "parameters, SHA-256). JSON: one document {'inventories': [...]}.",
    )
    inv.add_argument("--host", metavar="ID", default=None, help="only this host id")

    fl = sub.add_parser(
        "fleet",
        parents=[db, fmt],
        help="fleet risk, hosts and newest findings in one view",
        description="The fleet view: fleet risk, then every host with its risk, then the newest "
        "findings. JSON: one document with keys fleet, hosts, findings.",
    )
    fl.add_argument(
        "--limit",
        metavar="N",
        type=_count,
        default=50,
        help="show at most N findings (default 50; risk always counts all of them)",
    )
    return parser


# ---- serve


def default_pki_dir(db_url: str) -> Path:
    """umbra-pki/ beside the SQLite file (the working directory for other stores)."""
    try:
        path = sqlite_path(db_url)
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
    )
    del retention


def _cmd_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.workers > 1 and args.worker_index is None:
        _server_tls(args)  # create the PKI once, before the workers load it
        open_store(args.db, create=True).close()  # create or migrate the database once
        return supervise(args, list(sys.argv[1:] if args.argv is None else args.argv), PROG)
    tls = _server_tls(args)
    store = open_store(args.db, create=True)
    try:
        asyncio.run(_run_server(store, args, args.db, tls))
    finally:
        store.close()
    return EXIT_OK


# ---- tokens, agents, policy


def _cmd_token(args: argparse.Namespace) -> int:
    if args.action == "create":
        pki_dir = args.pki_dir or default_pki_dir(args.db)
        if args.ca_cert is not None:
            try:
                pin = pki.certificate_pin(args.ca_cert.read_bytes())
            except OSError as exc:
                raise pki.PKIError(f"cannot read {args.ca_cert}: {exc.strerror or exc}") from None
            except ValueError as exc:
                raise pki.PKIError(f"{args.ca_cert} is not a PEM certificate: {exc}") from None
        else:
            pin = pki.load_or_create_ca(pki_dir).pin
        secret = pki.new_token_secret()
        expires = time.time() + args.ttl
        with open_store(args.db, create=True) as store:
            store.create_token(pki.token_hash(secret), expires, args.uses, args.note)
        print(pki.Token(secret, pin).text)
        print(
            f"{PROG}: token valid until {iso_seconds(expires)} for {args.uses} enrollment(s)",
            file=sys.stderr,
        )
        return EXIT_OK
    with open_store(args.db, create=False) as store:
        tokens = store.tokens()
    now = time.time()
    docs = [
        {
            "hash": t.token_hash[:12],
            "created": iso_seconds(t.created_at),
            "expires": iso_seconds(t.expires_at),
            "uses_left": t.uses_left,
            "uses": t.uses,
            "state": "used" if t.uses_left <= 0 else "expired" if t.expires_at <= now else "valid",
            "note": t.note,
        }
        for t in tokens
    ]
    if args.format == "json":
        print(json.dumps({"tokens": docs}, indent=2))
    elif not docs:
        print("no tokens")
    else:
        columns = [Column(h) for h in ("HASH", "CREATED", "EXPIRES", "USES LEFT", "STATE")]
        columns.append(Column("NOTE", flex=True))
        rows = [
            (d["hash"], d["created"], d["expires"], f"{d['uses_left']}/{d['uses']}", d["state"], d["note"])
            for d in docs
        ]
        print(render_table(columns, rows, terminal_width()))
    return EXIT_OK


def _cmd_agent(args: argparse.Namespace) -> int:
    if args.action == "revoke":
        with open_store(args.db, create=False) as store:
            if not store.revoke_agent(args.host_id, time.time()):
                raise UsageError(f"no enrolled agent {args.host_id!r} (see 'umbra-collector agent list')")
        print(f"{PROG}: agent {args.host_id} revoked", file=sys.stderr)
        return EXIT_OK
    with open_store(args.db, create=False) as store:
        agents = store.agents()
    docs = [
        {
            **a.to_dict(),
            "enrolled_at": iso_seconds(a.enrolled_at),
            "renewed_at": iso_seconds(a.renewed_at),
            "not_after": iso_seconds(a.not_after),
            "revoked_at": iso_seconds(a.revoked_at),
        }
        for a in agents
    ]
    if args.format == "json":
        print(json.dumps({"agents": docs}, indent=2))
    elif not docs:
        print("no enrolled agents")
    else:
        columns = [Column("HOST", flex=True), Column("HOSTNAME", flex=True)]
        columns += [Column(h) for h in ("ENROLLED", "CERT EXPIRES", "REVOKED")]
        rows = [
            (d["host_id"], d["hostname"], d["enrolled_at"], d["not_after"], d["revoked_at"] or "-")
            for d in docs
        ]
        print(render_table(columns, rows, terminal_width()))
    return EXIT_OK


def _cmd_policy(args: argparse.Namespace) -> int:
    if args.action == "set":
        try:
            body = load_file(args.file)
        except PolicyError as exc:
            raise UsageError(str(exc)) from None
        with open_store(args.db, create=True) as store:
            version = store.set_policy(body)
        print(f"{PROG}: policy version {version} stored", file=sys.stderr)
        return EXIT_OK
    with open_store(args.db, create=False) as store:
        record = store.current_policy()
    if args.format == "json":
        policy: dict[str, Any] | None = None
        if record is not None:
            policy = {"version": record.version, "created": iso_seconds(record.created_at), **record.body}
        print(json.dumps({"policy": policy}, indent=2))
        return EXIT_OK
    if record is None:
        print("no policy set (agents use their local [policy] config)")
        return EXIT_OK
    print(f"policy version {record.version}, set {iso_seconds(record.created_at)}")
    for key, value in record.body.items():
        if isinstance(value, dict):
            text = ", ".join(f"{k} = {v:g}" for k, v in value.items()) or "-"
        else:
            text = ", ".join(value) or "-"
        print(f"  {key}: {text}")
    return EXIT_OK


# ---- read commands


def _age(when: str | float) -> str:
    """ "3s", "5m", "2h", "4d" ago; "never" for an empty time."""
    if isinstance(when, str):
        if not when:
            return "never"
        seconds = datetime.fromisoformat(when).timestamp()
    else:
        if when <= 0:
            return "never"
        seconds = when
    delta = max(0.0, time.time() - seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{int(delta // size)}{unit} ago"
    return f"{int(delta)}s ago"


def _process(finding: dict[str, Any]) -> str:
    p = finding.get("process")
    if not p:
        return "-"
    return f"{p['pid']}/{p['name']}" if p.get("name") else str(p["pid"])


def _risk(view: dict[str, Any]) -> str:
    risk = view["risk"]
    return f"{risk['score']:g} {risk['level']}"


HOST_COLUMNS = (
    Column("HOST", max_width=36, flex=True, min_width=8, weight=1.5),
    Column("HOSTNAME", max_width=30, flex=True, min_width=8),
    Column("OS", max_width=10),
    Column("AGENT", max_width=10),
    Column("SENSORS", align="right"),
    Column("CONTACT", align="right"),
    Column("SEQ", align="right"),
    Column("FINDINGS", align="right"),
    Column("RISK", max_width=14),
)
FLEET_HOST_COLUMNS = (
    Column("HOST", max_width=36, flex=True, min_width=8),
    Column("OS", max_width=10),
    Column("AGENT", max_width=10),
    Column("SENSORS", align="right"),
    Column("CONTACT", align="right"),
    Column("RISK", max_width=14),
    Column("FINDINGS", align="right"),
)
# Kind names are at most 20 characters and stay whole; the summary keeps most of what is left.
FINDING_COLUMNS = (
    Column("KIND", max_width=20),
    Column("SEVERITY", max_width=8),
    Column("HOST", max_width=36, flex=True, min_width=8),
    Column("SUMMARY", max_width=80, flex=True, min_width=12, weight=3.0),
    Column("PROCESS", max_width=24, flex=True, min_width=12),
    Column("COUNT", align="right"),
    Column("LAST SEEN", align="right"),
)


def _sensors(view: dict[str, Any]) -> str:
    return f"{view['sensors_active']}/{len(view['sensors'])}"


def _findings_table(
    findings: Sequence[dict[str, Any]], width: int, host_names: dict[str, str] | None = None
) -> str:
    """Findings as rows; HOST shows the host name where `host_names` knows it (ids are opaque)."""
    names = host_names or {}
    rows = [
        (
            f["kind"],
            f["severity"],
            names.get(f["host_id"]) or f["host_id"],
            f["summary"] or f["id"],
            _process(f),
            f["count"],
            _age(f["last_seen"]),
        )
        for f in findings
    ]
    return render_table(FINDING_COLUMNS, rows, width)


def _print_lines(items: Sequence[Any]) -> None:
    for item in items:
        print(json.dumps(item, separators=(",", ":")))


def _cmd_hosts(args: argparse.Namespace, store: Store) -> int:
    views = hosts_view(store)
    if args.format == "json":
        print(json.dumps({"hosts": views}, indent=2))
        return EXIT_OK
    if not views:
        print("no hosts yet")
        return EXIT_OK
    rows = [
        (
            v["host_id"],
            v["hostname"],
            v["os"],
            v["agent_version"],
            _sensors(v),
            _age(v["last_seen"]),
            v["last_sequence"],
            v["findings_total"],
            _risk(v),
        )
        for v in views
    ]
    print(render_table(HOST_COLUMNS, rows, terminal_width()))
    return EXIT_OK


def _cmd_findings(args: argparse.Namespace, store: Store) -> int:
    findings = store.findings(host_id=args.host, kind=args.kind, limit=args.limit)
    if args.format == "json":
        _print_lines(findings)
        return EXIT_OK
    if not findings:
        print("no findings")
        return EXIT_OK
    print(_findings_table(findings, terminal_width()))
    return EXIT_OK


INVENTORY_COLUMNS = (
    Column("HOST", max_width=36, flex=True, min_width=8),
    Column("PATH", max_width=90, flex=True, min_width=16, weight=3.0),
    Column("FORMAT", max_width=12),
    Column("SIZE", align="right"),
    Column("PARAMS", align="right"),
    Column("SHA-256", max_width=12),
    Column("TAKEN", align="right"),
)


def _cmd_inventory(args: argparse.Namespace, store: Store) -> int:
    inventories = store.inventories(args.host)
    if args.format == "json":
        print(json.dumps({"inventories": [i.to_dict() for i in inventories]}, indent=2))
        return EXIT_OK
    rows = [
        (
            inv.host_id,
            m["path"],
            m["format"],
            codec.human_size(m["size_bytes"]),
            f"{m['parameter_count']:,}" if m["parameter_count"] else "-",
            m["sha256"][:12] or "(hashing)",
            _age(inv.taken_at),
        )
        for inv in inventories
        for m in inv.models
    ]
    if not rows:
        print("no model files reported" if inventories else "no inventory yet")
        return EXIT_OK
    print(render_table(INVENTORY_COLUMNS, rows, terminal_width()))
    return EXIT_OK


def _cmd_fleet(args: argparse.Namespace, store: Store) -> int:
    doc = fleet_view(store, findings_limit=args.limit)
    if args.format == "json":
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    width = terminal_width()
    fleet = doc["fleet"]
    head = (
        f"Fleet risk: {fleet['level'].upper()} (max score {fleet['max_score']:g}, mean "
        f"{fleet['mean_score']:g})   hosts: {fleet['hosts']}, at risk: {fleet['hosts_at_risk']}   "
        f"findings: {fleet['findings']} ({fleet['unapproved']} unapproved)"
    )
    by_sev = ", ".join(f"{k} {v}" for k, v in fleet["findings_by_severity"].items()) or "none"
    by_kind = ", ".join(f"{k} {v}" for k, v in fleet["findings_by_kind"].items()) or "none"
    print(textwrap.fill(head, width, subsequent_indent="  "))
    print(textwrap.fill(f"By severity: {by_sev}", width, subsequent_indent="  "))
    print(textwrap.fill(f"By kind: {by_kind}", width, subsequent_indent="  "))
    print()
    hosts = doc["hosts"]
    if hosts:
        rows = [
            (
                v["hostname"] or v["host_id"],
                v["os"],
                v["agent_version"],
                _sensors(v),
                _age(v["last_seen"]),
                _risk(v),
                f"{v['findings_total']} ({v['findings_unapproved']} unappr.)",
            )
            for v in hosts
        ]
        print(render_table(FLEET_HOST_COLUMNS, rows, width))
    else:
        print("no hosts yet")
    print()
    findings = doc["findings"]
    if findings:
        shown = f"{len(findings)} newest of {fleet['findings']}" if len(findings) < fleet["findings"] else ""
        print(f"Findings{' (' + shown + ')' if shown else ''}:")
        print(_findings_table(findings, width, {h["host_id"]: h["hostname"] for h in hosts}))
    else:
        print("no findings")
    return EXIT_OK


READ_COMMANDS = {
    "hosts": _cmd_hosts,
    "findings": _cmd_findings,
    "inventory": _cmd_inventory,
    "fleet": _cmd_fleet,
}
FLEET_COMMANDS = {"token": _cmd_token, "agent": _cmd_agent, "policy": _cmd_policy}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = None if argv is None else list(argv)
    try:
        if args.command == "serve":
            return _cmd_serve(args)
        if args.command in FLEET_COMMANDS:
            return FLEET_COMMANDS[args.command](args)
        with open_store(args.db, create=False) as store:
            return READ_COMMANDS[args.command](args, store)
    except (StoreURLError, UsageError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except (StoreError, BindError, pki.PKIError) as exc:
        return _fail(str(exc), EXIT_RUNTIME)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `umbra-collector findings | head`: the reader left; say nothing, and keep Python's
        # final flush from failing on the closed pipe.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())

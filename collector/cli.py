"""`umbra-collector`: run the collector, and look at what it stored.

Exit status: 0 success, 1 runtime failure (database unusable, port taken), 2 usage error.
Every failure is one line on stderr starting "umbra-collector: error:", never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import textwrap
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NoReturn

from umbra import codec
from umbra.table import Column, render_table, terminal_width

from .addr import parse_addr
from .server import DEFAULT_GRACE_SECONDS, BindError, CollectorServer, serve
from .storage import DEFAULT_DB_URL, Store, StoreError, StoreURLError, open_store
from .views import fleet_view, hosts_view

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

    s = sub.add_parser(
        "serve",
        parents=[db],
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
        "--allow-insecure-remote",
        action="store_true",
        help="accept agents from other machines without client certificates, trusting the host id "
        "they claim (development only; by default only loopback agents are accepted until mTLS)",
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


async def _run_server(store: Store, args: argparse.Namespace, url: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: fall back to plain handlers
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))

    def listening(server: CollectorServer) -> None:
        print(
            f"{PROG}: listening grpc={server.grpc_address} http={server.http_address or 'off'} store={url}",
            file=sys.stderr,
            flush=True,
        )

    await serve(
        store,
        args.grpc,
        args.http,
        stop=stop,
        on_listening=listening,
        allow_insecure_remote=args.allow_insecure_remote,
        grace=args.grace,
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    store = open_store(args.db, create=True)
    try:
        asyncio.run(_run_server(store, args, args.db))
    finally:
        store.close()
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


READ_COMMANDS = {"hosts": _cmd_hosts, "findings": _cmd_findings, "fleet": _cmd_fleet}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _cmd_serve(args)
        with open_store(args.db, create=False) as store:
            return READ_COMMANDS[args.command](args, store)
    except (StoreURLError, UsageError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except (StoreError, BindError) as exc:
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

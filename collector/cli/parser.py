"""The command line: argument types and the parser of every command (the CLI contract of DESIGN.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from umbra import codec
from umbra.durations import describe

from ..addr import parse_addr
from ..ingest import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_MAX_STREAMS_PER_HOST,
    DEFAULT_MONITOR_INTERVAL,
    DEFAULT_SILENT_AFTER,
)
from ..query.times import parse_duration
from ..storage import DEFAULT_DB_URL, ROLES, store_url
from .common import DEFAULT_GRPC_ADDR, PROG, Parser, package_version
from .settings import CONFIG_ENV, DEFAULT_CONFIG, ENV_PREFIX


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
    """A duration in (0, 1h]: the monitor's period."""
    try:
        return parse_duration(text, maximum=3600.0)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    """A duration in [0, 1h]: the shutdown grace."""
    try:
        return parse_duration(text, maximum=3600.0, zero=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _db(text: str) -> str:
    try:
        return store_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Umbra collector: receives findings from umbra-agent over gRPC, stores them, "
        "scores risk per host and per fleet.",
        epilog=f"Database URLs: sqlite:///relative/path.db, sqlite:////absolute/path.db (default "
        f"{DEFAULT_DB_URL}, i.e. ./umbra-collector.db), a bare file path (SQLite), or postgresql://... "
        "Exit status: 0 ok, 1 runtime error, 2 usage error.",
    )
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, help="what to do ('COMMAND --help' for its options)"
    )

    parser.add_argument("--version", action="version", version=f"{PROG} {package_version()}")
    db = Parser(add_help=False)
    db.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help=f"read option defaults from this TOML file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG} when "
        f"it exists); a flag beats ${ENV_PREFIX}<OPTION>, which beats the file",
    )
    db.add_argument(
        "--db",
        metavar="URL",
        type=_db,
        default=DEFAULT_DB_URL,
        help=f"collector database: a file path (SQLite), sqlite:///PATH or postgresql://... (default "
        f"{DEFAULT_DB_URL}: ./umbra-collector.db in the working directory)",
    )
    fmt = Parser(add_help=False)
    fmt.add_argument(
        "--format", choices=("table", "json"), default="table", help="output format (default table)"
    )
    fmt.add_argument(
        "--wide",
        action="store_true",
        help="table: every column, every cell whole (default: fit the terminal's width)",
    )

    pki_opts = Parser(add_help=False)
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
        help="also serve the web console and the JSON API (/, /api/*, /healthz, /metrics) on HOST:PORT "
        "(default: off); they need a login (umbra-collector user add) or a bearer key (apikey create); "
        "HTTPS with the collector's own certificate when HOST is not loopback",
    )
    s.add_argument(
        "--metrics-public",
        action="store_true",
        help="serve /metrics without authentication (for a Prometheus scraper); default: it needs a key",
    )
    s.add_argument(
        "--http-cert",
        metavar="FILE",
        type=Path,
        default=None,
        help="serve --http over HTTPS with this certificate chain (PEM), with --http-key",
    )
    s.add_argument(
        "--http-key", metavar="FILE", type=Path, default=None, help="the private key (PEM) of --http-cert"
    )
    s.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="log verbosity on stderr (default info)",
    )
    s.add_argument(
        "--grace",
        metavar="DURATION",
        type=_seconds,
        default=DEFAULT_GRACE_SECONDS,
        help="at shutdown, how long open agent streams may still finish "
        f"(default {describe(DEFAULT_GRACE_SECONDS)})",
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
        f"(default {describe(DEFAULT_SILENT_AFTER)})",
    )
    s.add_argument(
        "--monitor-interval",
        metavar="DURATION",
        type=_positive_seconds,
        default=DEFAULT_MONITOR_INTERVAL,
        help=f"how often to look for silent hosts, revocations and a new policy "
        f"(default {describe(DEFAULT_MONITOR_INTERVAL)})",
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
    tc.add_argument(
        "--token-file",
        metavar="FILE",
        type=Path,
        default=None,
        help="write the token to this new file (mode 0600) instead of standard output, for "
        "`umbra-agent enroll --token-file FILE`",
    )
    tok_sub.add_parser(
        "list",
        parents=[db, fmt],
        help="list tokens (hashes, expiry, uses left)",
        description="List enrollment tokens: hash prefix, created, expires, uses left. "
        "The tokens themselves are never stored, so never shown.",
    )

    ag = sub.add_parser(
        "agent",
        help="enrolled agents: list, revoke, remove",
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
    ar.add_argument("host", metavar="HOST", help="the agent's host id or host name (see 'agent list')")
    rm = ag_sub.add_parser(
        "remove",
        parents=[db],
        help="remove a host: revoke its agent and delete its findings, inventory and host entry",
        description="Remove a host for good: its agent is revoked (a running collector ends its streams "
        "within --monitor-interval), and its host entry, findings and inventory are deleted. Kept: the "
        "revoked enrollment record (so its certificate never works again) and the daily risk snapshots "
        "(fleet history). The machine may come back with a new token and `umbra-agent enroll "
        "--new-identity`, as a new host.",
    )
    rm.add_argument("host", metavar="HOST", help="the host id or host name (see 'hosts' or 'agent list')")

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
    f.add_argument(
        "--host", metavar="HOST", default=None, help="only findings of this host (its id or its name)"
    )
    f.add_argument(
        "--kind",
        metavar="KIND",
        type=_kind,
        default=None,
        help=f"only findings of this kind, one of: {', '.join(codec.KIND_NAMES)}",
    )
    f.add_argument("--limit", metavar="N", type=_count, default=100, help="at most N findings (default 100)")
    f.add_argument(
        "--severity",
        metavar="LEVEL",
        choices=codec.SEVERITY_NAMES,
        default=None,
        help=f"only this severity or higher: {', '.join(codec.SEVERITY_NAMES)}",
    )
    f.add_argument("--user", metavar="NAME", default=None, help="only findings of this user")
    f.add_argument(
        "--service", metavar="HOST", default=None, help="only contacts with this AI service host name"
    )
    f.add_argument("--vendor", metavar="NAME", default=None, help="only findings naming this AI vendor")
    f.add_argument(
        "--runtime", metavar="ID", default=None, help="only this local runtime (catalog id, e.g. ollama)"
    )
    f.add_argument(
        "--sha256", metavar="HASH", default=None, help="only findings of the model weights with this hash"
    )
    approval = f.add_mutually_exclusive_group()
    approval.add_argument(
        "--approved",
        dest="approved",
        action="store_const",
        const=True,
        default=None,
        help="only approved ones",
    )
    approval.add_argument(
        "--unapproved", dest="approved", action="store_const", const=False, help="only unapproved ones"
    )
    f.add_argument(
        "--since", metavar="DURATION", type=_duration, default=None, help="last seen within, e.g. 30d"
    )
    f.add_argument(
        "--until", metavar="DURATION", type=_duration, default=None, help="last seen before this long ago"
    )
    f.add_argument(
        "--cursor",
        metavar="TOKEN",
        default=None,
        help="continue after a previous page (its cursor is printed on stderr when more remain)",
    )

    inv = sub.add_parser(
        "inventory",
        parents=[db, fmt],
        help="list the model files each host reported on its disks",
        description="The newest inventory of every host: its model files (path, format, size, "
        "parameters, SHA-256). JSON: one document {'inventories': [...]}.",
    )
    inv.add_argument("--host", metavar="HOST", default=None, help="only this host (its id or its name)")

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
    v = sub.add_parser(
        "view",
        parents=[db, fmt],
        help="a fleet view: risk, services, runtimes, models, compute, transfers, aitools, silent, trend",
        description="Fleet views, each aggregated by the database: risk (riskiest hosts and users with "
        "their reasons), services (AI services: hosts, processes, bytes up, unapproved), runtimes (local "
        "runtimes and exposed servers), models (the model census by SHA-256), compute (GPU and "
        "fine-tuning), transfers (model exfiltration and downloads), aitools (AI agents, MCP servers and "
        "AI extensions per host), silent (hosts without contact), "
        "trend (daily risk snapshots). JSON: one document {VIEW: [...]}.",
    )
    v.add_argument("view", metavar="VIEW", choices=VIEWS, help=f"one of: {', '.join(VIEWS)}")
    v.add_argument(
        "--since", metavar="DURATION", type=_duration, default=None, help="only activity within, e.g. 30d"
    )
    v.add_argument(
        "--top", metavar="N", type=_positive_int, default=20, help="rows of risk and models (default 20)"
    )
    v.add_argument(
        "--silent-after",
        metavar="DURATION",
        type=_duration,
        default=DEFAULT_SILENT_AFTER,
        help=f"silent: no contact for this long (default {describe(DEFAULT_SILENT_AFTER)})",
    )
    v.add_argument(
        "--scope", choices=("fleet", "host", "user"), default="fleet", help="trend: whose (default fleet)"
    )
    v.add_argument("--key", metavar="KEY", default="", help="trend: the host (id or name) or the user name")
    v.add_argument(
        "--days", metavar="N", type=_positive_int, default=30, help="trend: days back (default 30)"
    )

    us = sub.add_parser(
        "user",
        help="console users: add, list, remove",
        description="Console users. An admin also edits the policy and enrollment; a viewer reads.",
    )
    us_sub = us.add_subparsers(
        dest="action", metavar="ACTION", required=True, help="what to do ('ACTION --help' for its options)"
    )
    ua = us_sub.add_parser(
        "add",
        parents=[db],
        help="add a user (the password from a prompt, or from standard input)",
        description="Add a console user. The password (at least 10 characters) is read from a prompt, "
        "or as one line from standard input with --password-stdin; only its scrypt hash is stored.",
    )
    ua.add_argument("name", metavar="NAME", help="the login name")
    ua.add_argument("--role", choices=ROLES, required=True, help="admin or viewer")
    ua.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input (scripts)"
    )
    us_sub.add_parser("list", parents=[db, fmt], help="list users", description="List console users.")
    ur = us_sub.add_parser(
        "remove",
        parents=[db],
        help="remove a user and end their sessions",
        description="Remove a console user; their open sessions end at once.",
    )
    ur.add_argument("name", metavar="NAME", help="the login name")

    ak = sub.add_parser(
        "apikey",
        help="bearer keys for the JSON API: create, list, revoke",
        description="Bearer keys for scripts: send 'Authorization: Bearer KEY' to /api/* (and /metrics).",
    )
    ak_sub = ak.add_subparsers(
        dest="action", metavar="ACTION", required=True, help="what to do ('ACTION --help' for its options)"
    )
    kc = ak_sub.add_parser(
        "create",
        parents=[db],
        help="mint a key and print it (shown once)",
        description="Mint an API key and print it on stdout; only its hash is stored.",
    )
    kc.add_argument("--role", choices=ROLES, required=True, help="viewer or admin")
    kc.add_argument("--note", metavar="TEXT", default="", help="a note kept with the key (what uses it)")
    ak_sub.add_parser(
        "list",
        parents=[db, fmt],
        help="list keys (ids, roles)",
        description="List API keys, never the keys.",
    )
    kr = ak_sub.add_parser(
        "revoke", parents=[db], help="revoke a key", description="Revoke an API key for good."
    )
    kr.add_argument("key_id", metavar="ID", help="the key's id (see 'apikey list')")

    sub.add_parser(
        "snapshot",
        parents=[db],
        help="keep today's risk of every host, user and the fleet (for trends)",
        description="Score every host, user and the fleet now and keep it as today's snapshot (replacing "
        "one taken earlier today). A running collector takes one a day by itself.",
    )

    ex = sub.add_parser(
        "export",
        parents=[db],
        help="export findings: OCSF Detection Finding, JSON lines or CSV",
        description="Stream findings out of the store, newest first, page by page: --format ocsf writes one "
        "OCSF Detection Finding (class_uid 2004) per line, jsonl one finding per line (the shape of "
        "umbra-agent scan --format json), csv one row per finding with a header.",
    )
    ex.add_argument(
        "--format", choices=("ocsf", "jsonl", "csv"), default="ocsf", help="output format (default ocsf)"
    )
    ex.add_argument(
        "--since", metavar="DURATION", type=_duration, default=None, help="last seen within, e.g. 30d"
    )
    ex.add_argument(
        "--output", metavar="FILE", type=Path, default=None, help="write here (default: standard output)"
    )
    rp = sub.add_parser(
        "report",
        parents=[db],
        help="the fleet compliance report: HTML, PDF, CSV or JSON",
        description="The fleet report: coverage, AI service use by vendor and category, local runtimes "
        "and exposed servers, GPU and fine-tuning, the model census, downloads and exfiltration, the risk "
        "trend and top hosts, and the control mapping (NIST AI RMF, EU AI Act, ISO/IEC 42001). CSV is "
        "long format: section,item,metric,value.",
    )
    rp.add_argument("--format", choices=("html", "pdf", "csv", "json"), required=True, help="output format")
    rp.add_argument("--output", metavar="FILE", type=Path, required=True, help="write the report here")
    rp.add_argument(
        "--since",
        metavar="DURATION",
        type=_duration,
        default=None,
        help="activity within, e.g. 30d (default: everything stored)",
    )
    return parser


VIEWS = (
    "risk", "services", "runtimes", "models", "compute", "transfers", "aitools", "tools", "silent", "trend",
)  # fmt: skip

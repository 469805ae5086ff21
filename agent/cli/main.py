"""umbra-agent: scan once, run the daemon, or say which sensors work here."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from umbra.durations import parse_duration
from umbra.table import Column, render_table
from umbra.v1 import finding_pb2 as fpb

from agent import __version__
from agent.catalog.runtimes import CatalogError
from agent.cli.output import write_json_lines, write_table
from agent.cli.pcap import scan_pcap
from agent.config import DEFAULT_CONFIG, AgentConfig, ConfigError, config_path, load_config
from agent.delivery.tracker import FindingTracker
from agent.identity.host import host_id
from agent.logs import configure_logging
from agent.netparse.capture import CaptureError
from agent.pipeline import Pipeline
from agent.policy.rules import policy_from_config

PROG = "umbra-agent"


def _expected_errors() -> tuple[type[Exception], ...]:
    """What a command may fail with, as one line and no traceback. Imported here, not at the
    top: `scan --pcap` should not pay for the daemon's imports (gRPC, TLS) to start."""
    from agent.delivery.spool import SpoolError
    from agent.identity.credentials import IdentityError
    from agent.identity.enroll import EnrollError
    from agent.service.install import InstallError

    return (ConfigError, CatalogError, SpoolError, IdentityError, EnrollError, InstallError)


class _Parser(argparse.ArgumentParser):
    """Bad arguments: one line on stderr and exit status 2, no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Umbra agent: finds shadow AI on this workstation.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    config_help = (
        f"agent config file (TOML; default {DEFAULT_CONFIG} when it exists); defaults apply to "
        "everything it leaves out"
    )
    scan = sub.add_parser(
        "scan",
        help="one pass over this host, findings to stdout",
        description="Look at this host once (or for --duration seconds) and print findings.",
    )
    scan.add_argument(
        "--duration",
        type=_duration,
        default=0.0,
        metavar="DURATION",
        help="keep watching this long, e.g. 30s or 5m (a bare number is seconds), polling at the "
        "process sensor's interval (default: one pass)",
    )
    scan.add_argument(
        "--format",
        choices=("json", "table"),
        default="table",
        help="json: one finding per line; table: for people (default: table)",
    )
    scan.add_argument("--config", type=Path, metavar="FILE", help=config_help)
    scan.add_argument(
        "--pcap",
        type=Path,
        metavar="FILE",
        help="run the network detections on a saved capture instead of this host (pcap/pcapng)",
    )

    run = sub.add_parser(
        "run",
        help="the daemon: watch, spool and stream findings to the collector",
        description="Run until SIGTERM/SIGINT, streaming findings to the collector. SIGHUP reads "
        "--config again: a changed file is applied, a broken one refused (the running config stays).",
    )
    run.add_argument("--config", type=Path, metavar="FILE", help=config_help)

    status = sub.add_parser(
        "status",
        help="which sensors run here, which cannot and why; spool depth",
        description="Report sensor states and the spool without starting the daemon.",
    )
    status.add_argument("--config", type=Path, metavar="FILE", help=config_help)
    status.add_argument(
        "--format", choices=("json", "table"), default="table", help="output format (default: table)"
    )

    enroll = sub.add_parser(
        "enroll",
        help="trade an enrollment token for this agent's client certificate",
        description="Generate this agent's key, send a certificate request with the token to the "
        "collector's enrollment port, and keep the certificate in the state directory. From then on "
        "`run` streams over mutual TLS to the collector it enrolled with.",
    )
    enroll.add_argument(
        "--collector", required=True, metavar="HOST:PORT", help="the collector's enrollment address"
    )
    token = enroll.add_mutually_exclusive_group(required=True)
    token.add_argument(
        "--token", metavar="TOKEN", help="a token from `umbra-collector token create` (it shows in `ps`)"
    )
    token.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="read the token from this file ('-': standard input), so it never sits on a command line",
    )
    enroll.add_argument(
        "--new-identity",
        action="store_true",
        help="enroll under a new key, hence a new host id; by default an agent that was enrolled before "
        "keeps its key and so its host id",
    )
    enroll.add_argument(
        "--ca-file",
        type=Path,
        metavar="FILE",
        help="the collector's CA certificate (PEM), for a token without a CA fingerprint",
    )
    enroll.add_argument("--config", type=Path, metavar="FILE", help=config_help)

    root_help = "install under this folder instead of / (for images and tests; default: /)"
    install = sub.add_parser(
        "install",
        help="install this binary as a system service (systemd unit, config, state directory)",
        description="Copy the binary to /usr/local/bin, the systemd unit to /etc/systemd/system, write "
        "/etc/umbra/agent.toml and create /var/lib/umbra (0700); with --token, enroll with the "
        "collector first. On a host that runs systemd, enable and start the service.",
    )
    install.add_argument("--root", type=Path, default=Path("/"), metavar="DIR", help=root_help)
    install.add_argument(
        "--collector",
        metavar="HOST:PORT",
        default="",
        help="the collector: its enrollment address with --token (the config then names the stream "
        "address the collector answers), else its stream address, written to the config",
    )
    install.add_argument("--token", metavar="TOKEN", default="", help="enroll with this token first")
    install.add_argument(
        "--ca-file", type=Path, metavar="FILE", help="the collector's CA (PEM), for a token without a pin"
    )
    install.add_argument(
        "--binary",
        type=Path,
        metavar="PATH",
        help="the binary to install (default: the one-file binary that is running)",
    )
    uninstall = sub.add_parser(
        "uninstall",
        help="remove the service; keep the config and state unless --purge",
        description="Stop and disable the service, remove the binary and the unit. The config and "
        "the state (identity, unsent findings) stay unless --purge.",
    )
    uninstall.add_argument("--root", type=Path, default=Path("/"), metavar="DIR", help=root_help)
    keep = uninstall.add_mutually_exclusive_group()
    keep.add_argument(
        "--keep-state", action="store_true", help="keep /etc/umbra and /var/lib/umbra (the default)"
    )
    keep.add_argument("--purge", action="store_true", help="remove /etc/umbra and /var/lib/umbra too")
    return parser


def _duration(text: str) -> float:
    """`scan --duration`: a duration with its unit, or bare seconds, which the CLI contract
    (DESIGN.md: `--duration SECONDS`) promised first and scripts already pass."""
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if seconds >= 0 and seconds == seconds and seconds != float("inf"):
            return seconds
    try:
        return parse_duration(text, zero=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _read_token(args: argparse.Namespace) -> str:
    """The token from --token, or the first line of --token-file (one line, no newline kept)."""
    if args.token is not None:
        return str(args.token)
    path: Path = args.token_file
    from agent.identity.enroll import EnrollError

    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EnrollError(
            f"cannot read the token file {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise EnrollError(f"the token file {path} must hold one token on one line, it has {len(lines)} lines")
    return lines[0]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(getattr(args, "config", None))
        configure_logging(config.agent.log_level, config.agent.log_format)
        if args.command in ("install", "uninstall"):
            return _service(args)
        if args.command == "scan":
            return _scan(config, args.duration, args.format, args.pcap)
        if args.command == "enroll":
            return _enroll(config, args.collector, _read_token(args), args.ca_file, args.new_identity)
        if args.command == "run":
            return _run(config, args.config)
        return _status(config, args.format)
    except _expected_errors() as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    except KeyboardInterrupt:
        return 130


def _run(config: AgentConfig, path: Path | None) -> int:
    """The daemon; SIGHUP with a changed config starts it again, in this process, with that config."""
    import asyncio
    import signal

    # SIGHUP's default is to end the process: until the daemon handles it (and between two runs of
    # a reload), one that comes is ignored instead.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    from agent.watchdog import tune_malloc

    tune_malloc()  # before gRPC and the sensors start their threads
    from agent.daemon import run_daemon  # the daemon's imports (gRPC, TLS) only when it runs

    path = config_path(path)  # /etc/umbra/agent.toml when none is given and it exists
    reload = (lambda: load_config(path)) if path is not None else None
    while True:
        outcome = asyncio.run(run_daemon(config, reload, path))
        if outcome.restart:  # the watchdog's last resort: a fresh start, same pid
            from agent.watchdog import reexec, restarts_so_far

            reexec(restarts_so_far())
        if outcome.reload is None:
            return 0
        config = outcome.reload
        configure_logging(config.agent.log_level, config.agent.log_format)


def _service(args: argparse.Namespace) -> int:
    from agent.service import install

    try:
        if args.command == "uninstall":
            done = install.uninstall(args.root, purge=args.purge)
        else:
            ca = args.ca_file.read_bytes() if args.ca_file is not None else None
            done = install.install(args.root, args.binary, args.collector, args.token, ca)
    except OSError as exc:  # not root, a read-only file system, a missing --ca-file ...
        where = f"{exc.filename}: " if exc.filename else ""
        raise install.InstallError(f"{where}{exc.strerror or exc}") from None
    for line in done:
        print(line)
    return 0


def _scan(config: AgentConfig, duration: float, fmt: str, pcap: Path | None) -> int:
    # A scan reports everything it saw, however long it ran: only the tracker's cap forgets.
    tracker = FindingTracker(host_id(config.agent.host_id, config.state_dir), forget_after=math.inf)
    if pcap is not None:
        return _scan_pcap(config, pcap, fmt, tracker)
    from agent.daemon import build_pipeline

    pipeline = build_pipeline(config, tracker)
    pipeline.start()
    deadline = time.monotonic() + duration
    try:
        while True:
            pipeline.poll()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(config.sensors.process.interval, remaining))
    finally:
        pipeline.stop()
    _write(tracker.current(), fmt)
    return 0


def _scan_pcap(config: AgentConfig, pcap: Path, fmt: str, tracker: FindingTracker) -> int:
    """The network detections on a saved capture, as Zeek's -r: same catalog, same policy."""
    judge = Pipeline([], [], policy_from_config(config), tracker)
    endpoints = judge.policy.endpoints
    assert endpoints is not None
    try:
        drafts = scan_pcap(
            pcap,
            endpoints,
            approved=judge.policy.approved_services,
            upload_threshold=judge.policy.upload_threshold_bytes,
        )
    except CaptureError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{PROG}: error: cannot read {pcap}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    now = time.time()
    for draft in drafts:
        judge.judge(draft, now)
    _write(tracker.current(), fmt)
    return 0


def _write(findings: Sequence[fpb.Finding], fmt: str) -> None:
    if fmt == "json":
        write_json_lines(findings, sys.stdout)
    else:
        write_table(findings, sys.stdout)


def _enroll(config: AgentConfig, address: str, token: str, ca_file: Path | None, new_identity: bool) -> int:
    from agent.identity.credentials import IdentityError, load_identity
    from agent.identity.enroll import EnrollError, enroll

    try:
        ca = ca_file.read_bytes() if ca_file is not None else None
    except OSError as exc:
        raise EnrollError(f"cannot read {ca_file}: {exc.strerror or exc}") from None
    try:
        before = load_identity(config.state_dir)
    except IdentityError:
        before = None
    identity = enroll(address, token, config.state_dir, ca_pem=ca, new_identity=new_identity)
    until = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(identity.not_after))
    print(f"enrolled as {identity.host_id}; stream to {identity.collector}; certificate valid until {until}")
    if before is not None and before.host_id == identity.host_id:
        print(
            f"{PROG}: kept this agent's identity {identity.host_id} (its key from before); "
            "--new-identity enrolls as a new host",
            file=sys.stderr,
        )
    return 0


def _status(config: AgentConfig, fmt: str) -> int:
    """The running daemon's own account (its status file) when it runs; else what this host allows:
    each sensor's capability, and the spool the daemon left."""
    from agent.identity.credentials import collector_address, load_identity
    from agent.status_file import read_status, status_path

    view = read_status(status_path(config.state_dir))
    identity = load_identity(config.state_dir)
    host = identity.host_id if identity else host_id(config.agent.host_id, config.state_dir)
    address = collector_address(config.collector.address, identity)
    capture_lost: int | None = None  # packets the running (or last) daemon's capture lost
    if config.spool_path.exists() and config.sensors.network.enabled:
        from agent.daemon import CAPTURE_DROPS
        from agent.delivery.spool import Spool

        counted = Spool(config.spool_path)
        capture_lost = counted.counter(CAPTURE_DROPS)
        counted.close()
    if view.running and view.doc is not None:
        doc = view.doc
        sensors = doc["sensors"]
        spool = doc["spool"]
        collector = doc["collector"]
    else:
        from agent.daemon import build_pipeline
        from agent.delivery.spool import Spool

        statuses = build_pipeline(config, FindingTracker(host)).statuses()
        sensors = [{"name": s.name, "state": s.state.value, "reason": s.reason} for s in statuses]
        depth: int | None = None
        dropped: int | None = None
        if config.spool_path.exists():
            kept = Spool(config.spool_path)
            depth, dropped = kept.depth(), kept.dropped()
            kept.close()
        spool = {"path": str(config.spool_path), "depth": depth, "dropped": dropped}
        collector = {"address": address, "enrolled": identity is not None}
    daemon: dict[str, object] = {"running": view.running}
    if view.running and view.doc is not None:
        daemon.update(
            {k: view.doc[k] for k in ("version", "pid", "started_at", "written_at", "process", "watchdog")}
        )
    else:
        daemon.update(why=view.why, last_written_at=view.doc.get("written_at") if view.doc else None)
    if fmt == "json":
        print(
            json.dumps(
                {
                    "host_id": host,
                    "daemon": daemon,
                    "sensors": sensors,
                    "spool": spool,
                    "capture": {"dropped": capture_lost},
                    "collector": collector["address"],
                    "enrolled": collector["enrolled"],
                    "connection": collector if view.running else None,
                }
            )
        )
        return 0
    for line in _daemon_lines(view.doc if view.running else None, view.why):
        print(line)
    mode = "mutual TLS" if collector["enrolled"] else "not enrolled: plain gRPC"
    print(f"host id    {host}")
    print(f"collector  {collector['address']} ({mode})")
    if view.running:
        print(f"           {_link(collector)}")
    waiting = f"{spool['depth']} findings waiting, {spool['dropped']} dropped"
    print(f"spool      {spool['path']}: {'not created yet' if spool['depth'] is None else waiting}")
    if capture_lost is not None:
        print(f"capture    {capture_lost} packets dropped by the daemon's packet capture since it started")
    print()
    columns = [Column("SENSOR"), Column("STATE"), Column("WHY", flex=True)]
    print(render_table(columns, [[s["name"], s["state"], s["reason"]] for s in sensors]))
    return 0


def _daemon_lines(doc: dict[str, Any] | None, why: str) -> list[str]:
    """The daemon, its own cost and its watchdog, for people."""
    from agent.watchdog import mib

    if doc is None:
        return [f"daemon     not running: {why}"]
    proc, dog = doc["process"], doc["watchdog"]
    up = _ago(time.time() - float(doc["started_at"]))
    now, window = _cpu(proc["cpu_percent"]), _cpu(proc["cpu_percent_window"])
    memory = f"{mib(proc['rss_bytes'])} resident (peak {mib(proc['peak_rss_bytes'])})"
    state = "ok" if dog["state"] == "active" and not dog["shed"] else dog["state"]
    ceilings = f"ceilings {dog['cpu_ceiling_percent']:g} % CPU, {mib(dog['memory_ceiling_bytes'])}"
    return [
        f"daemon     running: pid {doc['pid']}, {PROG} {doc['version']}, up {up}",
        f"cost       CPU {now} of a core now, {window} over {dog['cpu_window_seconds']:.0f} s; {memory}",
        f"watchdog   {state if dog['enabled'] else 'off'}{': ' + dog['reason'] if dog['reason'] else ''}"
        f" ({ceilings}; {dog['restarts']} restarts)",
    ]


def _link(collector: dict[str, Any]) -> str:
    link = (
        "connected"
        if collector["connected"]
        else f"not connected ({collector['last_error'] or 'connecting'})"
    )
    acked = collector["last_ack_at"]
    ack = (
        f"last ack: batch {collector['last_ack_sequence']}, {_ago(time.time() - acked)} ago"
        if acked
        else "no ack yet"
    )
    return f"{link}; {ack}; {collector['batches_sent']} batches sent, {collector['reconnects']} reconnects"


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _cpu(percent: float | None) -> str:
    return "-" if percent is None else f"{percent:.1f} %"


if __name__ == "__main__":
    sys.exit(main())

"""`view` and `snapshot`: the fleet views of the query layer, as tables or one JSON document."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from typing import Any

from umbra import codec
from umbra.table import Column, render_table, terminal_width

from ..query import activity, snapshots
from ..query.hosts import host_label, host_names
from ..query.risk import risk_board
from ..query.times import iso_seconds
from ..storage import Store
from .common import EXIT_OK, PROG
from .render import age


def _rows(args: argparse.Namespace, store: Store) -> tuple[list[dict[str, Any]], list[str]]:
    """The view's rows as dicts, and the keys its table shows."""
    since = time.time() - args.since if args.since else None
    name = args.view
    if name == "risk":
        board = risk_board(store, args.top)
        rows = [{"who": "host", **asdict(h)} for h in board.hosts] + [
            {"who": "user", **asdict(u)} for u in board.users
        ]
        names = host_names(store)
        for r in rows:
            key = r.pop("host_id")
            r["name"] = host_label(names, key) if r["who"] == "host" else key
            r["id"] = key if r["who"] == "host" else ""
            r["reasons"] = "; ".join(r["reasons"])
        return rows, ["who", "name", "score", "level", "unapproved", "reasons"]
    if name == "services":
        return [s.to_dict() for s in activity.services(store, since)], [
            "service", "vendor", "hosts", "processes", "bytes_out", "findings", "unapproved", "last_seen",
        ]  # fmt: skip
    if name == "runtimes":
        return [r.to_dict() for r in activity.runtimes(store, since)], [
            "runtime", "hosts", "exposed_hosts", "findings", "unapproved", "last_seen",
        ]  # fmt: skip
    if name == "models":
        rows = [m.to_dict() for m in activity.census(store, args.top)]
        for m in rows:
            m["holders"] = [f"{h['host_id']}:{h['path']}" for h in m["holders"]]
        return rows, ["sha256", "format", "architecture", "parameters", "hosts", "unapproved_hosts", "copies"]
    if name in ("compute", "transfers", "aitools"):
        views = {"compute": activity.compute, "transfers": activity.transfers, "aitools": activity.aitools}
        view = views[name]
        return _named(store, [r.to_dict() for r in view(store, since)]), [
            "host", "kind", "findings", "unapproved", "bytes", "last_seen",
        ]  # fmt: skip
    if name == "tools":
        names = host_names(store)
        rows = [t.to_dict() for t in activity.tools(store)]
        for t in rows:
            t["host_count"] = len(t["hosts"])
            t["hosts"] = [host_label(names, h) for h in t["hosts"]]
        return rows, ["kind", "tool", "name", "host_count", "hosts", "details"]
    if name == "silent":
        return _named(store, [s.to_dict() for s in activity.silent_hosts(store, args.silent_after)]), [
            "host", "last_seen", "silent_since",
        ]  # fmt: skip
    trend = snapshots.trend(store, args.scope, args.key, args.days)
    return [r.to_dict() for r in trend], ["day", "scope", "key", "score", "level", "findings", "unapproved"]


def _named(store: Store, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows keyed by host id, each with its host's name too ("host"; its id when it has none)."""
    names = host_names(store)
    for r in rows:
        r["host"] = host_label(names, r["host_id"])
    return rows


def _cell(key: str, value: Any) -> str:
    if key in ("last_seen", "silent_since"):
        return age(float(value)) if value else "-"
    if key in ("bytes", "bytes_out"):
        return codec.human_size(int(value))
    if key == "sha256":
        return str(value)[:16]
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):  # JSON keeps the list; a table cell joins it
        return ", ".join(str(v) for v in value)
    return str(value)


def cmd_view(args: argparse.Namespace, store: Store) -> int:
    rows, keys = _rows(args, store)
    if args.format == "json":
        for r in rows:
            for key in ("last_seen", "silent_since"):
                if isinstance(r.get(key), float):
                    r[key] = iso_seconds(r[key])
        print(json.dumps({args.view: rows}, indent=2))
        return EXIT_OK
    if not rows:
        print(f"nothing to show in {args.view}")
        return EXIT_OK
    if args.wide and rows and ("host_id" in rows[0] or "id" in rows[0]):
        keys = [*keys, "host_id" if "host_id" in rows[0] else "id"]
    columns = [Column(k.upper().replace("_", " "), flex=k in ("reasons", "service", "name")) for k in keys]
    table = [[_cell(k, r[k]) for k in keys] for r in rows]
    print(render_table(columns, table, terminal_width(), wide=args.wide))
    return EXIT_OK


def cmd_snapshot(args: argparse.Namespace, store: Store) -> int:
    rows = snapshots.take(store)
    fleet = rows[0]
    print(
        f"{PROG}: snapshot of {fleet.day} kept: fleet {fleet.score:g} {fleet.level}, "
        f"{len(rows) - 1} hosts and users",
        file=sys.stderr,
    )
    return EXIT_OK

"""Read commands: hosts, findings, inventory, the fleet, and the fleet views; they call the query
layer only, then render."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time

from umbra import codec
from umbra.table import Column, render_table, terminal_width

from ..query.documents import fleet_view, hosts_view
from ..query.findings import MAX_PAGE, BadQuery, at_least, finding_filter, list_findings
from ..query.hosts import host_label, host_names, resolve_host
from ..storage import Store
from .common import EXIT_OK, PROG, UsageError
from .render import (
    FLEET_HOST_COLUMNS,
    HOST_COLUMNS,
    INVENTORY_COLUMNS,
    age,
    findings_table,
    print_lines,
    risk_text,
    sensors_text,
)


def cmd_hosts(args: argparse.Namespace, store: Store) -> int:
    views = hosts_view(store)
    if args.format == "json":
        print(json.dumps({"hosts": views}, indent=2))
        return EXIT_OK
    if not views:
        print("no hosts yet")
        return EXIT_OK
    rows = [
        (
            v["hostname"] or v["host_id"],
            v["host_id"],
            v["os"],
            v["agent_version"],
            sensors_text(v),
            age(v["last_seen"]),
            v["last_sequence"],
            v["findings_total"],
            risk_text(v),
        )
        for v in views
    ]
    print(render_table(HOST_COLUMNS, rows, terminal_width(), wide=args.wide))
    return EXIT_OK


def cmd_findings(args: argparse.Namespace, store: Store) -> int:
    if args.limit == 0:
        return EXIT_OK
    now = time.time()
    where = finding_filter(
        kinds=(args.kind,) if args.kind else (),
        severities=at_least(args.severity) if args.severity else (),
        host=args.host,
        user=args.user,
        service=args.service,
        vendor=args.vendor,
        runtime=args.runtime,
        sha256=args.sha256,
        approved=args.approved,
        since=now - args.since if args.since else None,
        until=now - args.until if args.until else None,
    )
    try:
        page = list_findings(store, where, min(args.limit, MAX_PAGE), args.cursor)
    except BadQuery as exc:
        raise UsageError(str(exc)) from None
    findings = page.findings
    if page.cursor is not None:
        print(f"{PROG}: more findings: --cursor {page.cursor}", file=sys.stderr)
    if args.format == "json":
        print_lines(findings)
        return EXIT_OK
    if not findings:
        print("no findings")
        return EXIT_OK
    print(findings_table(findings, terminal_width(), host_names(store), args.wide))
    return EXIT_OK


def cmd_inventory(args: argparse.Namespace, store: Store) -> int:
    inventories = store.inventories(resolve_host(store, args.host) if args.host else None)
    names = host_names(store)
    if args.format == "json":
        print(json.dumps({"inventories": [i.to_dict() for i in inventories]}, indent=2))
        return EXIT_OK
    rows = [
        (
            host_label(names, inv.host_id),
            m["path"],
            m["format"],
            codec.human_size(m["size_bytes"]),
            f"{m['parameter_count']:,}" if m["parameter_count"] else "-",
            m["sha256"][:12] or "(hashing)",
            age(inv.taken_at),
            *((inv.host_id,) if args.wide else ()),
        )
        for inv in inventories
        for m in inv.models
    ]
    if not rows:
        print("no model files reported" if inventories else "no inventory yet")
        return EXIT_OK
    columns = (*INVENTORY_COLUMNS, Column("HOST ID")) if args.wide else INVENTORY_COLUMNS
    print(render_table(columns, rows, terminal_width(), wide=args.wide))
    return EXIT_OK


def cmd_fleet(args: argparse.Namespace, store: Store) -> int:
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
                sensors_text(v),
                age(v["last_seen"]),
                risk_text(v),
                f"{v['findings_total']} ({v['findings_unapproved']} unappr.)",
            )
            for v in hosts
        ]
        print(render_table(FLEET_HOST_COLUMNS, rows, width, wide=args.wide))
    else:
        print("no hosts yet")
    print()
    findings = doc["findings"]
    if findings:
        shown = f"{len(findings)} newest of {fleet['findings']}" if len(findings) < fleet["findings"] else ""
        print(f"Findings{' (' + shown + ')' if shown else ''}:")
        print(findings_table(findings, width, {h["host_id"]: h["hostname"] for h in hosts}, args.wide))
    else:
        print("no findings")
    return EXIT_OK

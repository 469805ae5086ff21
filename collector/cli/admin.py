"""Admin commands of the fleet channel: enrollment tokens, enrolled agents, the policy."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TextIO

from umbra.table import Column, render_table, terminal_width

from .. import pki
from ..fleet_admin import mint_token, revoke_agent
from ..policy import FILE_THRESHOLDS, PolicyError, load_file
from ..query.admin import agents_view, policy_view, tokens_view
from ..query.hosts import host_names, resolve_host
from ..query.times import iso_seconds
from ..storage import open_store
from .common import EXIT_OK, PROG, UsageError
from .serve import default_pki_dir


def cmd_token(args: argparse.Namespace) -> int:
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
        file = _secret_file(args.token_file) if args.token_file is not None else None
        try:
            with open_store(args.db, create=True) as store:
                token, expires = mint_token(store, pin, args.ttl, args.uses, args.note)
            (file or sys.stdout).write(token + "\n")
        finally:
            if file is not None:
                file.close()
        if args.token_file is not None:
            print(f"{PROG}: token written to {args.token_file} (mode 0600)", file=sys.stderr)
        print(
            f"{PROG}: token valid until {iso_seconds(expires)} for {args.uses} enrollment(s)",
            file=sys.stderr,
        )
        return EXIT_OK
    with open_store(args.db, create=False) as store:
        docs = tokens_view(store)
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
        print(render_table(columns, rows, terminal_width(), wide=args.wide))
    return EXIT_OK


def _secret_file(path: Path) -> TextIO:
    """A new file only its owner can read, created before the token is minted (so a bad path costs
    no token); an existing file is never overwritten (it may be someone else's)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} exists; give a new file for the token") from None
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror or exc}") from None
    return os.fdopen(fd, "w", encoding="utf-8")


def cmd_agent(args: argparse.Namespace) -> int:
    if args.action in ("revoke", "remove"):
        with open_store(args.db, create=False) as store:
            names = host_names(store)
            host_id = resolve_host(store, args.host, names)
            label = f"{names[host_id]} ({host_id})" if names.get(host_id) else host_id
            enrolled = revoke_agent(store, host_id)
            if args.action == "revoke":
                if not enrolled:
                    raise UsageError(f"host {label} has no enrolled agent (see 'umbra-collector agent list')")
                print(f"{PROG}: agent {label} revoked", file=sys.stderr)
                return EXIT_OK
            deleted = store.forget_host(host_id)
        print(
            f"{PROG}: host {label} removed: {'agent revoked, ' if enrolled else ''}{deleted} findings, its "
            "inventory and host entry deleted; kept: the revoked enrollment record and the risk history",
            file=sys.stderr,
        )
        return EXIT_OK
    with open_store(args.db, create=False) as store:
        docs = agents_view(store)
    if args.format == "json":
        print(json.dumps({"agents": docs}, indent=2))
    elif not docs:
        print("no enrolled agents")
    else:
        columns = [Column("HOST", flex=True), Column("HOST ID", flex=True)]
        columns += [Column(h) for h in ("ENROLLED", "CERT EXPIRES", "REVOKED")]
        rows = [
            (
                d["hostname"] or d["host_id"],
                d["host_id"],
                d["enrolled_at"],
                d["not_after"],
                d["revoked_at"] or "-",
            )
            for d in docs
        ]
        print(render_table(columns, rows, terminal_width(), wide=args.wide))
    return EXIT_OK


def cmd_policy(args: argparse.Namespace) -> int:
    if args.action == "set":
        try:
            body = load_file(args.file, warn=lambda m: print(f"{PROG}: warning: {m}", file=sys.stderr))
        except PolicyError as exc:
            raise UsageError(str(exc)) from None
        with open_store(args.db, create=True) as store:
            version = store.set_policy(body)
        print(f"{PROG}: policy version {version} stored", file=sys.stderr)
        return EXIT_OK
    with open_store(args.db, create=False) as store:
        policy = policy_view(store)
    if args.format == "json":
        print(json.dumps({"policy": policy}, indent=2))
        return EXIT_OK
    if policy is None:
        print("no policy set (agents use their local [policy] config)")
        return EXIT_OK
    print(f"policy version {policy.pop('version')}, set {policy.pop('created')}")
    thresholds = policy.pop("thresholds", {})
    for key, value in policy.items():
        print(f"  {key}: {', '.join(value) or '-'}")
    for key, wire in FILE_THRESHOLDS.items():  # under the names a policy file gives them
        print(f"  {key}: {thresholds[wire]:g}" if wire in thresholds else f"  {key}: - (the agent's own)")
    return EXIT_OK

"""Console access commands: users (`user add/list/remove`) and bearer keys (`apikey create/list/revoke`)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from umbra.table import Column, render_table, terminal_width

from ..console.credentials import WeakPassword, check_password, hash_password, new_api_key, secret_hash
from ..query.times import iso_seconds
from ..storage import open_store
from .common import EXIT_OK, PROG, UsageError


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise UsageError("no terminal to prompt for the password: use --password-stdin")
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise UsageError("the two passwords differ")
    try:
        check_password(password)
    except WeakPassword as exc:
        raise UsageError(str(exc)) from None
    return password


def cmd_user(args: argparse.Namespace) -> int:
    if args.action == "add":
        if (
            not args.name
            or len(args.name) > 64
            or not args.name.isprintable()
            or args.name != args.name.strip()
        ):
            raise UsageError("a user name is 1..64 printable characters, no surrounding spaces")
        password_hash = hash_password(_read_password(args))
        with open_store(args.db, create=True) as store:
            if not store.add_user(args.name, args.role, password_hash):
                raise UsageError(f"user {args.name!r} exists (remove it first to replace it)")
        print(f"{PROG}: user {args.name} added ({args.role})", file=sys.stderr)
        return EXIT_OK
    if args.action == "remove":
        with open_store(args.db, create=True) as store:
            if not store.remove_user(args.name):
                raise UsageError(f"no user {args.name!r} (see 'umbra-collector user list')")
        print(f"{PROG}: user {args.name} removed, their sessions ended", file=sys.stderr)
        return EXIT_OK
    with open_store(args.db, create=False) as store:
        docs = [{"name": u.name, "role": u.role, "created": iso_seconds(u.created_at)} for u in store.users()]
    if args.format == "json":
        print(json.dumps({"users": docs}, indent=2))
    elif not docs:
        print("no users (add one: umbra-collector user add NAME --role admin)")
    else:
        columns = [Column("NAME", flex=True), Column("ROLE"), Column("CREATED")]
        print(render_table(columns, [(d["name"], d["role"], d["created"]) for d in docs], terminal_width()))
    return EXIT_OK


def cmd_apikey(args: argparse.Namespace) -> int:
    if args.action == "create":
        key_id, key = new_api_key()
        with open_store(args.db, create=True) as store:
            store.add_api_key(key_id, secret_hash(key), args.role, args.note)
        print(key)
        print(f"{PROG}: API key {key_id} ({args.role}) created; it is shown only now", file=sys.stderr)
        return EXIT_OK
    if args.action == "revoke":
        with open_store(args.db, create=True) as store:
            if not store.remove_api_key(args.key_id):
                raise UsageError(f"no API key {args.key_id!r} (see 'umbra-collector apikey list')")
        print(f"{PROG}: API key {args.key_id} revoked", file=sys.stderr)
        return EXIT_OK
    with open_store(args.db, create=False) as store:
        docs = [
            {"id": k.key_id, "role": k.role, "created": iso_seconds(k.created_at), "note": k.note}
            for k in store.api_keys()
        ]
    if args.format == "json":
        print(json.dumps({"api_keys": docs}, indent=2))
    elif not docs:
        print("no API keys")
    else:
        columns = [Column("ID"), Column("ROLE"), Column("CREATED"), Column("NOTE", flex=True)]
        rows = [(d["id"], d["role"], d["created"], d["note"]) for d in docs]
        print(render_table(columns, rows, terminal_width()))
    return EXIT_OK

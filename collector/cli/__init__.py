"""`umbra-collector`: run the collector, administer the fleet channel, and look at what it stored.

Exit status: 0 success, 1 runtime failure (database unusable, port taken), 2 usage error.
Every failure is one line on stderr starting "umbra-collector: error:", never a traceback.

Modules: parser (arguments), serve, admin (tokens, agents, policy), access (console users, API keys),
reads (views), render (tables), report (the fleet report).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

from .. import pki
from ..ingest import BindError
from ..query.findings import BadQuery
from ..query.times import parse_duration
from ..storage import StoreError, StoreURLError, open_store
from .access import cmd_apikey, cmd_user
from .admin import cmd_agent, cmd_policy, cmd_token
from .common import EXIT_RUNTIME, EXIT_USAGE, UsageError, fail
from .export import cmd_export
from .parser import build_parser
from .reads import cmd_findings, cmd_fleet, cmd_hosts, cmd_inventory
from .report import cmd_report
from .serve import cmd_serve
from .settings import apply_settings
from .views import cmd_snapshot, cmd_view

__all__ = ["build_parser", "main", "parse_duration"]

READ_COMMANDS = {
    "hosts": cmd_hosts,
    "findings": cmd_findings,
    "inventory": cmd_inventory,
    "fleet": cmd_fleet,
    "view": cmd_view,
    "export": cmd_export,
    "report": cmd_report,
}
FLEET_COMMANDS = {
    "token": cmd_token,
    "agent": cmd_agent,
    "policy": cmd_policy,
    "user": cmd_user,
    "apikey": cmd_apikey,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        apply_settings(parser, sys.argv[1:] if argv is None else argv, os.environ)
    except UsageError as exc:
        return fail(str(exc), EXIT_USAGE)
    args = parser.parse_args(argv)
    args.argv = None if argv is None else list(argv)
    try:
        if args.command == "serve":
            return cmd_serve(args)
        if args.command in FLEET_COMMANDS:
            return FLEET_COMMANDS[args.command](args)
        if args.command == "snapshot":
            with open_store(args.db, create=True) as store:  # it writes
                return cmd_snapshot(args, store)
        with open_store(args.db, create=False) as store:
            return READ_COMMANDS[args.command](args, store)
    except (StoreURLError, UsageError, BadQuery) as exc:
        return fail(str(exc), EXIT_USAGE)
    except (StoreError, BindError, pki.PKIError) as exc:
        return fail(str(exc), EXIT_RUNTIME)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `umbra-collector findings | head`: the reader left; say nothing, and keep Python's
        # final flush from failing on the closed pipe.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_RUNTIME

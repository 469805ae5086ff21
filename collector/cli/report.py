"""`report`: the fleet compliance report as HTML, PDF, CSV or JSON, written to a file."""

from __future__ import annotations

import argparse
import sys

from ..reports import build_report, render
from ..storage import Store
from .common import EXIT_OK, PROG, UsageError


def cmd_report(args: argparse.Namespace, store: Store) -> int:
    body = render(build_report(store, args.since), args.format)
    try:
        args.output.write_bytes(body)
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"{PROG}: wrote the {args.format} report to {args.output} ({len(body)} bytes)", file=sys.stderr)
    return EXIT_OK

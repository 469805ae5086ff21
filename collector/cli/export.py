"""`export`: findings out of the store, streamed, to a file or standard output."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import TextIO

from ..query.export import export
from ..storage import Store
from .common import EXIT_OK, PROG, UsageError


def cmd_export(args: argparse.Namespace, store: Store) -> int:
    since = time.time() - args.since if args.since else None
    with contextlib.ExitStack() as stack:
        out: TextIO = sys.stdout
        if args.output is not None:
            try:
                out = stack.enter_context(open(args.output, "w", encoding="utf-8", newline=""))
            except OSError as exc:
                raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from None
        n = export(store, args.format, out, since)
    print(f"{PROG}: exported {n} findings ({args.format})", file=sys.stderr)
    return EXIT_OK

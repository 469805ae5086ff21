"""What every command shares: the program name, exit statuses, one-line errors."""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from typing import NoReturn

PROG = "umbra-collector"
DEFAULT_GRPC_ADDR = "127.0.0.1:50051"
EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input found after parsing (e.g. a --db URL no backend takes): exit 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and a hint), not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (try '{self.prog} --help')\n")


def fail(message: str, status: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


def package_version() -> str:
    """The installed distribution's version (`--version`)."""
    try:
        return metadata.version("umbra")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"

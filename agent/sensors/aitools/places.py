"""Catalog paths made real for one home: "~/x" below it, "*" one directory level, bounded."""

from __future__ import annotations

import os
from collections.abc import Iterator

MAX_MATCHES = 64  # per pattern: a home with 10,000 browser profiles is not walked whole


def expand(pattern: str, home: str | None) -> Iterator[str]:
    """The existing paths a catalog pattern names for `home` (None: machine-wide patterns only)."""
    if pattern.startswith("~/"):
        if home is None:
            return
        pattern = os.path.join(home, pattern[2:])
    elif home is not None:
        return  # machine-wide patterns are expanded once, not per home
    if "*" not in pattern:
        if os.path.lexists(pattern):
            yield pattern
        return
    head, _, tail = pattern.partition("*")
    parent, prefix = os.path.split(head)
    suffix, _, rest = tail.partition("/")
    try:
        with os.scandir(parent) as entries:
            names = sorted(
                e.name
                for e in entries
                if e.name.startswith(prefix) and e.name.endswith(suffix) and e.is_dir(follow_symlinks=False)
            )
    except OSError:
        return
    for name in names[:MAX_MATCHES]:
        joined = os.path.join(parent, name)
        if rest:  # the rest is absolute now: expanded as a machine-wide pattern
            yield from expand(os.path.join(joined, rest), None)
        else:
            yield joined


def subdirs(path: str, limit: int = MAX_MATCHES) -> list[str]:
    """The directories directly in `path` (not through symlinks), sorted, at most `limit`."""
    try:
        with os.scandir(path) as entries:
            return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))[:limit]
    except OSError:
        return []

"""Shared libraries for ctypes, by their usual sonames first.

`ctypes.util.find_library` runs `ldconfig -p` (and may run a compiler) in a child process, and
importing it brings shutil and tempfile into the daemon: it is the fallback, asked only when no
usual soname loads.
"""

from __future__ import annotations

from collections.abc import Iterator


def library_names(sonames: tuple[str, ...], short: str) -> Iterator[str]:
    """`sonames` in order, then what find_library says for `short` (when it finds one)."""
    yield from sonames
    import ctypes.util

    found = ctypes.util.find_library(short)
    if found:
        yield found

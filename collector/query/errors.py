"""The read side's one error type."""

from __future__ import annotations


class BadQuery(ValueError):
    """A filter, host or cursor the read side cannot use (the HTTP API answers 400, the CLI exits 2)."""

"""Disguised renames: weights renamed from their format's name to one that hides them, and new
files whose innocent name is worth checking against the known models' hashes."""

from __future__ import annotations

import functools
import os

from agent.modelfiles.formats import default_format_catalog

_PARTIAL_SUFFIXES = ("incomplete", "part", "partial")  # a download in progress, not a disguise


def suffix(path: str) -> str:
    name = os.path.basename(path)
    return name.rsplit(".", 1)[-1].lower() if "." in name.strip(".") else ""


@functools.lru_cache(maxsize=1)
def model_extensions() -> frozenset[str]:
    return frozenset(e for f in default_format_catalog().formats.values() if f.model for e in f.extensions)


def disguised(old: str, new: str, fmt: str) -> bool:
    """Renamed from a model's name to one that hides it: the old name had a model extension, the new
    one is not the format's own (a .gguf renamed .bin, .dat or .pdf)."""
    old_s, new_s = suffix(old), suffix(new)
    if old_s == new_s or old_s not in model_extensions():
        return False
    entry = default_format_catalog().get(fmt)
    primary = entry.extensions[0] if entry is not None and entry.extensions else ""
    return new_s != primary


def innocent_suffix(path: str) -> bool:
    """A name no model format uses (a .pdf, a .dat), and not a download in progress."""
    name_suffix = suffix(path)
    return (
        bool(name_suffix) and name_suffix not in model_extensions() and name_suffix not in _PARTIAL_SUFFIXES
    )

"""What identification answers, and the few exceptions the format parsers raise inside it.

The public shapes (`Identification`, `ModelFileInfo`) are plain frozen data so that sensors can
put them in observations and evidence as they are. Everything a parser takes from a file is
attacker-controlled text: `clean_text` bounds it and strips control characters before it goes
anywhere a person reads it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "EXTRA_MAX_ITEMS",
    "EXTRA_MAX_VALUE",
    "Identification",
    "Malformed",
    "ModelFileInfo",
    "NoMatch",
    "NotModel",
    "Parsed",
    "Unavailable",
    "Verdict",
    "bounded_extra",
    "clean_text",
    "human_count",
]

Verdict = Literal["model", "not_model", "malformed"]

#: `extra` holds at most this many entries, keys and values cut to these lengths.
EXTRA_MAX_ITEMS: Final = 16
EXTRA_MAX_KEY: Final = 48
EXTRA_MAX_VALUE: Final = 160
#: Names and architectures read from a header are cut to this many characters.
TEXT_MAX: Final = 160


class Malformed(Exception):
    """The bytes claim a format but break its rules (or end before the structure does)."""


class Unavailable(Exception):
    """A parser needs bytes beyond what this call may read (not the file's fault)."""


class NoMatch(Exception):
    """The bytes are not this format after all (identification tries the next candidate)."""


class NotModel(Exception):
    """The bytes are a known container that holds no model (a zip of text, plain HDF5 data)."""

    def __init__(self, fmt: str, reason: str) -> None:
        super().__init__(reason)
        self.format = fmt
        self.reason = reason


@dataclass(frozen=True)
class ModelFileInfo:
    """What the header says about the weights. Every field but path, format and size may be
    unknown (None) because a format does not record it or the header did not show it."""

    path: str
    format: str  # a format id of agent/catalog/model_formats.toml
    size_bytes: int
    architecture: str | None = None
    model_name: str | None = None
    parameter_count: int | None = None
    quantization: str | None = None
    tensor_count: int | None = None
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Identification:
    """The answer for one file: a verdict, one line saying why, and the facts when it is a model.

    `format` names what the bytes are (or claim to be) even when the verdict is not "model":
    "gguf" for a malformed GGUF, "hdf5" for an HDF5 file with no Keras model in it. `confidence`
    is how strongly the format implies model weights (catalog data: 0.99 for GGUF, 0.4 for a
    bare .npy array), for the detection layer's policy threshold. `bytes_read` is what this
    identification read from the file.
    """

    verdict: Verdict
    reason: str
    info: ModelFileInfo | None = None
    format: str = ""
    confidence: float = 0.0
    bytes_read: int = 0

    @property
    def is_model(self) -> bool:
        return self.verdict == "model"


@dataclass
class Parsed:
    """A parser's result before the size floor and the catalog are applied.

    `consistent` is True only when every length, count and offset in the header was checked
    against the file size and they all agree (the data section is exactly where the header
    says). A file below the size floor is a model only when it is consistent.
    """

    format: str
    summary: str
    consistent: bool = False
    architecture: str | None = None
    model_name: str | None = None
    parameter_count: int | None = None
    quantization: str | None = None
    tensor_count: int | None = None
    extra: dict[str, str] = field(default_factory=dict)


def clean_text(value: object, limit: int = TEXT_MAX) -> str:
    """Header text made safe to show: control characters dropped, whitespace folded, bounded."""
    text = value if isinstance(value, str) else str(value)
    text = text[: limit * 4]
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bounded_extra(items: Mapping[str, object]) -> dict[str, str]:
    """`extra` with at most EXTRA_MAX_ITEMS entries, clean and bounded keys and values."""
    out: dict[str, str] = {}
    for key, value in items.items():
        if len(out) >= EXTRA_MAX_ITEMS:
            break
        if value is None or value == "":
            continue
        k = clean_text(key, EXTRA_MAX_KEY)
        if k:
            out[k] = clean_text(value, EXTRA_MAX_VALUE)
    return out


def human_count(n: int) -> str:
    """1234567 -> '1.23M' (parameter counts in one-line reasons)."""
    if n < 1000:
        return str(n)
    exp = min(int(math.log10(n)) // 3, 4)
    return f"{n / 10 ** (3 * exp):.3g}{'KMBT'[exp - 1]}"

"""The model-format catalog (`agent/catalog/model_formats.toml`): loaded once, validated strictly.

The parsers take their lookup tables from here (GGUF quantisation names and block sizes,
safetensors dtype widths, Core ML model kinds), and identification takes each format's
confidence and whether it holds a model at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from agent.catalog.source import (
    CatalogError,
    catalog_entries,
    entry_flag,
    entry_lists,
    entry_strings,
    parse_catalog_toml,
    read_catalog,
)

__all__ = ["FormatCatalog", "FormatEntry", "GgmlType", "default_format_catalog", "parse_format_catalog"]

_SCHEMA_VERSION: Final = 1
_Fail = Callable[[str], CatalogError]
_TOP_KEYS: Final = frozenset({"schema_version", "format", "gguf", "safetensors", "coreml"})
_ENTRY_KEYS: Final = frozenset(
    {"id", "name", "model", "confidence", "signature", "extensions", "source", "notes"}
)
_REQUIRED: Final = ("id", "name", "signature", "source")


@dataclass(frozen=True)
class FormatEntry:
    id: str
    name: str
    model: bool
    confidence: float
    signature: str
    source: str
    extensions: tuple[str, ...] = ()
    notes: str = ""


@dataclass(frozen=True)
class GgmlType:
    name: str
    block: int  # elements per block
    bytes: int  # bytes per block


@dataclass(frozen=True)
class FormatCatalog:
    formats: Mapping[str, FormatEntry]
    gguf_file_types: Mapping[int, str]
    gguf_tensor_types: Mapping[int, GgmlType]
    safetensors_dtype_bits: Mapping[str, int]
    coreml_model_types: Mapping[int, str]

    def get(self, format_id: str) -> FormatEntry | None:
        return self.formats.get(format_id)


@lru_cache(maxsize=1)
def default_format_catalog() -> FormatCatalog:
    """The packaged catalog, loaded once per process."""
    return parse_format_catalog(*read_catalog("model_formats.toml"))


def parse_format_catalog(data: bytes | str, label: str = "<string>") -> FormatCatalog:
    """Validate catalog TOML; `label` names it in error messages."""
    doc = parse_catalog_toml(data, label, _TOP_KEYS)

    def fail(problem: str) -> CatalogError:
        return CatalogError(f"{label}: {problem}")

    entries = catalog_entries(doc, "format", label, _entry)
    if not entries:
        raise fail("`format` must be a non-empty array of tables ([[format]])")
    formats = {entry.id: entry for entry in entries}

    gguf = _table(doc, "gguf", {"file_types", "tensor_types"}, fail)
    file_types = {k: _str(v, f"gguf.file_types.{k}", fail) for k, v in _int_keyed(gguf, "file_types", fail)}
    tensor_types: dict[int, GgmlType] = {}
    for k, v in _int_keyed(gguf, "tensor_types", fail):
        where = f"gguf.tensor_types.{k}"
        if not isinstance(v, dict) or set(v) != {"name", "block", "bytes"}:
            raise fail("must be { name, block, bytes }")
        tensor_types[k] = GgmlType(
            _str(v["name"], where, fail), _pos(v["block"], where, fail), _pos(v["bytes"], where, fail)
        )
    st = _table(doc, "safetensors", {"dtype_bits"}, fail)
    bits = st.get("dtype_bits", {})
    if not isinstance(bits, dict) or not bits:
        raise fail("safetensors.dtype_bits must be a non-empty table")
    dtype_bits = {str(k): _pos(v, f"safetensors.dtype_bits.{k}", fail) for k, v in bits.items()}
    coreml = _table(doc, "coreml", {"model_types"}, fail)
    model_types = {
        k: _str(v, f"coreml.model_types.{k}", fail) for k, v in _int_keyed(coreml, "model_types", fail)
    }
    return FormatCatalog(formats, file_types, tensor_types, dtype_bits, model_types)


def _entry(raw: Mapping[str, Any], number: int, label: str) -> FormatEntry:
    fail, strings = entry_strings(
        raw, number, label, known=_ENTRY_KEYS, required=(*_REQUIRED, "model"), strings=(*_REQUIRED, "notes")
    )
    model = entry_flag(raw, "model", False, fail)
    confidence = raw.get("confidence", 0.0)
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 <= confidence <= 1:
        raise fail("'confidence' must be a number in 0..1")
    if model and not confidence:
        raise fail("a model format needs a confidence above 0")
    extensions = entry_lists(raw, ("extensions",), fail)["extensions"]
    return FormatEntry(
        id=strings["id"],
        name=strings["name"],
        model=model,
        confidence=float(confidence),
        signature=" ".join(strings["signature"].split()),
        source=strings["source"],
        extensions=extensions,
        notes=strings.get("notes", ""),
    )


def _table(doc: Mapping[str, Any], key: str, allowed: set[str], fail: _Fail) -> Mapping[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise fail(f"[{key}] must be a table")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise fail(f"[{key}]: unknown key(s) {', '.join(map(repr, unknown))}")
    return value


def _int_keyed(table: Mapping[str, Any], key: str, fail: _Fail) -> list[tuple[int, Any]]:
    value = table.get(key)
    if not isinstance(value, dict) or not value:
        raise fail(f"{key} must be a non-empty table")
    out: list[tuple[int, Any]] = []
    for k, v in value.items():
        if not str(k).isdigit():
            raise fail(f"{key}: key {k!r} must be a non-negative integer")
        out.append((int(k), v))
    return out


def _str(value: object, where: str, fail: _Fail) -> str:
    if not isinstance(value, str) or not value:
        raise fail("must be a non-empty string")
    return value


def _pos(value: object, where: str, fail: _Fail) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise fail("must be a positive integer")
    return value

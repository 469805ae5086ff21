"""Core ML: `.mlmodel` files (protobuf Model) and `.mlpackage` directories.

A Model starts, like ONNX, with a small varint in field 1, so the rule is strict: the
specificationVersion (field 1) first and in 1..20, a description (field 2), exactly one model
kind from the catalog's table (fields 200..3000), and nothing else but isUpdatable (10).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Final

from agent.modelfiles.formats import FormatCatalog
from agent.modelfiles.model import Malformed, NoMatch, Parsed, clean_text, human_count
from agent.modelfiles.protowire import WIRE_LEN, WIRE_VARINT, fields, window_fields
from agent.modelfiles.window import Window

__all__ = ["MLMODEL_IN_PACKAGE", "package_model_file", "parse_coreml"]

SPEC_VERSIONS: Final = range(1, 21)
MAX_TOP_FIELDS: Final = 64
MAX_DESCRIPTION: Final = 1 << 16
MLMODEL_IN_PACKAGE: Final = Path("Data/com.apple.CoreML/model.mlmodel")
MAX_MANIFEST: Final = 1 << 20


def parse_coreml(win: Window, catalog: FormatCatalog) -> Parsed:
    kinds = catalog.coreml_model_types
    spec: int | None = None
    description: tuple[int, int] | None = None
    kind: tuple[str, int] | None = None
    first = True
    try:
        for f in window_fields(win, 0, win.size, MAX_TOP_FIELDS):
            if first:
                if f.number != 1 or f.wire != WIRE_VARINT or f.value not in SPEC_VERSIONS:
                    raise NoMatch("does not start with a Core ML specificationVersion")
                first = False
                spec = f.value
            elif f.number == 2 and f.wire == WIRE_LEN and description is None:
                description = (f.start, f.end)
            elif f.number == 10 and f.wire == WIRE_VARINT:
                pass
            elif f.number in kinds and f.wire == WIRE_LEN and kind is None:
                kind = (kinds[f.number], f.value)
            else:
                raise NoMatch(f"field {f.number} is not a Core ML Model field")
    except Malformed as exc:
        if spec is None or kind is None:
            raise NoMatch(str(exc)) from None
        raise
    if spec is None or kind is None:
        raise NoMatch("no Core ML model kind")
    extra = {"specification_version": str(spec), "model_type": kind[0]}
    if description and description[1] - description[0] <= MAX_DESCRIPTION:
        with contextlib.suppress(Malformed):  # the description only adds detail
            extra.update(_description(win.at(description[0], description[1] - description[0])))
    return Parsed(
        format="coreml",
        summary=f"Core ML model, specification v{spec}, {kind[0]} ({human_count(kind[1])} bytes)",
        consistent=description is not None and kind[1] > 0,
        architecture=kind[0],
        model_name=extra.pop("short_description", None),
        extra=extra,
    )


def _description(buf: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    inputs = outputs = 0
    for f in fields(buf, 0, len(buf), 4096):
        if f.number == 1 and f.wire == WIRE_LEN:
            inputs += 1
        elif f.number == 10 and f.wire == WIRE_LEN:
            outputs += 1
        elif f.number == 100 and f.wire == WIRE_LEN:  # Metadata
            for m in fields(buf, f.start, f.end, 256):
                label = {1: "short_description", 2: "version", 3: "author", 4: "license"}.get(m.number)
                if label and m.wire == WIRE_LEN:
                    out[label] = clean_text(buf[m.start : m.end].decode("utf-8", "replace"), 120)
    out["inputs"] = str(inputs)
    out["outputs"] = str(outputs)
    return out


def package_model_file(directory: Path) -> Path | None:
    """The model.mlmodel of an .mlpackage directory, when its Manifest.json says it is one."""
    manifest = directory / "Manifest.json"
    model = directory / MLMODEL_IN_PACKAGE
    try:
        if not manifest.is_file() or not model.is_file():
            return None
        with manifest.open("rb") as fh:
            raw = fh.read(MAX_MANIFEST + 1)
        if len(raw) > MAX_MANIFEST:
            return None
        doc = json.loads(raw)
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("itemInfoEntries"), dict):
        return None
    return model

"""ONNX ModelProto, walked on the wire (no onnx package, no generated code).

Protobuf bytes are everywhere, so the rules are strict on purpose: ir_version (field 1) must be
the first field and lie in 1..32 (serialisers write fields in number order), every top-level
field must have the wire type onnx.proto gives it, and a graph (field 7) must be present. The
graph is walked (node and initializer counts, parameters from the initializers' dims) only when
it lies within the bytes this call may read; weights stored as external data keep it small.
"""

from __future__ import annotations

from typing import Final

from agent.modelfiles.model import Malformed, NoMatch, Parsed, Unavailable, clean_text, human_count
from agent.modelfiles.protowire import WIRE_LEN, WIRE_VARINT, Field, WireError, fields, varint, window_fields
from agent.modelfiles.window import Window

__all__ = ["parse_onnx"]

IR_VERSIONS: Final = range(1, 33)
MAX_TOP_FIELDS: Final = 4096
MAX_GRAPH_FIELDS: Final = 1 << 20
# ModelProto field -> wire type (onnx.proto); anything else is not ONNX.
_MODEL_FIELDS: Final = {
    1: WIRE_VARINT,  # ir_version
    2: WIRE_LEN,  # producer_name
    3: WIRE_LEN,  # producer_version
    4: WIRE_LEN,  # domain
    5: WIRE_VARINT,  # model_version
    6: WIRE_LEN,  # doc_string
    7: WIRE_LEN,  # graph
    8: WIRE_LEN,  # opset_import
    14: WIRE_LEN,  # metadata_props
    20: WIRE_LEN,  # training_info
    25: WIRE_LEN,  # functions
    26: WIRE_LEN,  # configuration
}
# TensorProto.data_type -> name (onnx.proto TensorProto.DataType)
_DTYPES: Final = {
    1: "FLOAT",
    2: "UINT8",
    3: "INT8",
    4: "UINT16",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    9: "BOOL",
    10: "FLOAT16",
    11: "DOUBLE",
    12: "UINT32",
    13: "UINT64",
    16: "BFLOAT16",
    17: "FLOAT8E4M3FN",
    19: "FLOAT8E5M2",
    21: "UINT4",
    22: "INT4",
    23: "FLOAT4E2M1",
}


def parse_onnx(win: Window, max_header: int) -> Parsed:
    """Raise NoMatch unless the bytes are an ONNX ModelProto; Malformed when one breaks."""
    ir_version: int | None = None
    graph: Field | None = None
    strings: dict[int, str] = {}
    opsets: list[str] = []
    model_version: int | None = None
    first = True
    truncated_walk = False
    try:
        for f in window_fields(win, 0, win.size, MAX_TOP_FIELDS):
            expected = _MODEL_FIELDS.get(f.number)
            if expected is None or expected != f.wire:
                raise NoMatch(f"field {f.number} (wire type {f.wire}) is not a ModelProto field")
            if first:
                if f.number != 1 or f.value not in IR_VERSIONS:
                    raise NoMatch("does not start with a plausible ir_version")
                first = False
            if f.number == 1:
                ir_version = f.value
            elif f.number == 5:
                model_version = f.value
            elif f.number in (2, 3, 4) and f.value <= 256:
                strings[f.number] = _utf8(win.at(f.start, f.value))
            elif f.number == 7:
                if graph is not None:
                    raise Malformed("two graphs")
                graph = f
            elif f.number == 8 and len(opsets) < 8 and f.value <= 512:
                opsets.append(_opset(win.at(f.start, f.value)))
    except WireError as exc:
        # Past a valid ir_version, a graph whose length overruns the file is a broken (or
        # truncated) model; any other wire error this early means "not ONNX".
        if ir_version is not None and (graph is not None or exc.field == 7):
            raise
        raise NoMatch(str(exc)) from None
    except Unavailable:
        # The fields after a large graph lie beyond the bytes given: what came before decides.
        if ir_version is None or graph is None:
            raise
        truncated_walk = True
    if ir_version is None or graph is None:
        raise NoMatch("no ir_version or no graph")
    nodes = initializers = 0
    params: int | None = None
    dtypes: dict[str, int] = {}
    graph_name: str | None = None
    walked = False
    if graph.end <= len(win.head) or (graph.end <= max_header and win.grow_head(graph.end)):
        walked = True
        params = 0
        for g in fields(win.head, graph.start, graph.end, MAX_GRAPH_FIELDS):
            if g.number == 1 and g.wire == WIRE_LEN:
                nodes += 1
            elif g.number == 2 and g.wire == WIRE_LEN and g.value <= 256:
                graph_name = _utf8(win.head[g.start : g.end])
            elif g.number == 5 and g.wire == WIRE_LEN:
                initializers += 1
                n, dtype = _tensor(win.head, g.start, g.end)
                params += n
                name = _DTYPES.get(dtype, f"type {dtype}")
                dtypes[name] = dtypes.get(name, 0) + n
    producer = strings.get(2)
    extra: dict[str, str] = {"ir_version": str(ir_version)}
    if producer:
        extra["producer"] = producer + (f" {strings[3]}" if strings.get(3) else "")
    if strings.get(4):
        extra["domain"] = strings[4]
    if model_version is not None:
        extra["model_version"] = str(model_version)
    if opsets:
        extra["opset"] = ", ".join(opsets)
    if truncated_walk:
        extra["fields"] = "partial: the fields after the graph lie beyond the bytes read"
    if walked:
        extra["nodes"] = str(nodes)
    else:
        extra["graph"] = f"{graph.value} bytes, beyond the read limit: not walked"
    quant = max(dtypes, key=lambda d: dtypes[d]) if dtypes else None
    parts = [f"ONNX IR v{ir_version}"]
    if producer:
        parts.append(f"from {producer}")
    if opsets:
        parts.append(f"opset {opsets[0]}")
    if walked:
        parts.append(f"{nodes} nodes, {initializers} initializers")
        if params:
            parts.append(f"{human_count(params)} parameters")
    return Parsed(
        format="onnx",
        summary=", ".join(parts),
        consistent=walked and not truncated_walk and nodes > 0,
        architecture=None,
        model_name=graph_name or None,
        parameter_count=params if walked else None,
        quantization=quant,
        tensor_count=initializers if walked else None,
        extra=extra,
    )


def _tensor(buf: bytes, start: int, end: int) -> tuple[int, int]:
    """(element count, data_type) of a TensorProto from its dims (field 1) and data_type (2)."""
    n = 1
    dtype = 0
    for f in fields(buf, start, end, 1 << 16):
        if f.number == 1:
            if f.wire == WIRE_VARINT:
                n *= _dim(f.value)
            elif f.wire == WIRE_LEN:  # packed
                pos = f.start
                while pos < f.end:
                    d, pos = varint(buf, pos, f.end)
                    n *= _dim(d)
        elif f.number == 2 and f.wire == WIRE_VARINT:
            dtype = f.value
        if n >= 1 << 63:
            raise Malformed("an initializer's element count overflows 64 bits")
    return n, dtype


def _dim(d: int) -> int:
    if d >= 1 << 63:  # a negative int64 (two's complement on the wire)
        raise Malformed("negative initializer dimension")
    return d


def _opset(buf: bytes) -> str:
    domain, version = "", 0
    for f in fields(buf, 0, len(buf), 16):
        if f.number == 1 and f.wire == WIRE_LEN:
            domain = _utf8(buf[f.start : f.end])
        elif f.number == 2 and f.wire == WIRE_VARINT:
            version = f.value
    return f"{domain}:{version}" if domain else str(version)


def _utf8(raw: bytes) -> str:
    return clean_text(raw.decode("utf-8", errors="replace"), 120)

"""Hostile input: model-file identification never raises, never hangs, never over-reads or
over-allocates, and calls a lying header "malformed" rather than believing it.

Property tests throw arbitrary bytes and mutated real headers (bytes flipped, files cut
short, lengths replaced by absurd values) at every parser; targeted tests check the classic
attacks (a 100 GB length claim, a 2^60-element array, a zip bomb, a pickle that would run code)
under a tracemalloc budget and under RLIMIT_AS in a child process.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_modelfiles_formats import (
    BUILDERS,
    make_gguf,
    make_keras_zip,
)

from agent.modelfiles import identify_file, identify_header, looks_like_model_quick
from agent.modelfiles.identify import FIRST_READ
from agent.modelfiles.model import Identification

VERDICTS = {"model", "not_model", "malformed"}
REPO = Path(__file__).resolve().parents[2]


def _sane(result: Identification, elapsed: float) -> None:
    assert result.verdict in VERDICTS
    assert "internal error" not in result.reason, result.reason
    assert "\n" not in result.reason
    assert (result.info is not None) == (result.verdict == "model")
    assert elapsed < 1.0, f"{elapsed:.2f}s: {result.reason}"


def _timed(head: bytes, size: int, tail: bytes = b"") -> Identification:
    start = time.perf_counter()
    result = identify_header(head, size, tail=tail)
    _sane(result, time.perf_counter() - start)
    return result


@pytest.fixture(scope="module")
def valid_headers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("valid")
    out = {fmt: build(tmp / fmt)[0].read_bytes() for fmt, build in BUILDERS.items()}
    out["keras"] = make_keras_zip(tmp / "keras", tmp)[0].read_bytes()
    return out


# --- properties ----------------------------------------------------------------------------------

SIZES = st.one_of(st.just(None), st.integers(0, 1 << 40))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=4096), size=SIZES)
def test_arbitrary_bytes(data: bytes, size: int | None) -> None:
    _timed(data, len(data) if size is None else size)
    looks_like_model_quick(data)


MAGICS = [
    b"GGUF",
    b"\x93NUMPY",
    b"PK\x03\x04",
    b"PK\x05\x06",
    b"\x89HDF\r\n\x1a\n",
    b"\x08\x07\x12",
    b"\x80\x02",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(magic=st.sampled_from(MAGICS), rest=st.binary(max_size=2048), size=SIZES)
def test_arbitrary_bytes_behind_a_real_magic(magic: bytes, rest: bytes, size: int | None) -> None:
    data = magic + rest
    _timed(data, len(data) if size is None else size)


HUGE = [2**60, 2**63 - 1, 2**64 - 1, 2**32 - 1, 2**31, 100 * 10**9, 0]


@st.composite
def mutation(draw: st.DrawFn) -> tuple[str, int, str, int, int]:
    fmt = draw(st.sampled_from([*BUILDERS, "keras"]))
    kind = draw(st.sampled_from(["flip", "truncate", "huge64", "huge32", "insert"]))
    return fmt, kind, draw(st.integers(0, 1 << 20)), draw(st.sampled_from(HUGE)), draw(st.integers(0, 255))


def _mutate(data: bytes, kind: str, where: int, huge: int, byte: int) -> bytes:
    pos = where % max(len(data), 1)
    if kind == "flip" and data:
        return data[:pos] + bytes([data[pos] ^ (byte or 0xFF)]) + data[pos + 1 :]
    if kind == "truncate":
        return data[:pos]
    if kind == "huge64":
        return data[:pos] + struct.pack("<Q", huge % 2**64) + data[pos + 8 :]
    if kind == "huge32":
        return data[:pos] + struct.pack("<I", huge % 2**32) + data[pos + 4 :]
    return data[:pos] + struct.pack("<Q", huge % 2**64) + data[pos:]


@settings(
    max_examples=600,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(m=mutation(), claim=st.booleans())
def test_mutated_real_headers(
    valid_headers: dict[str, bytes], m: tuple[str, str, int, int, int], claim: bool
) -> None:
    fmt, kind, where, huge, byte = m
    data = _mutate(valid_headers[fmt], kind, where, huge, byte)
    # Either the bytes are the whole file, or they are the head of a much larger one.
    size = len(data) + (50 << 20 if claim else 0)
    _timed(data, size, tail=data[-4096:] if not claim else b"")


# --- targeted attacks ---------------------------------------------------------------------------


def _sparse(path: Path, head: bytes, size: int) -> Path:
    """A file of `size` bytes that starts with `head` (sparse: costs no disk)."""
    with path.open("wb") as fh:
        fh.write(head)
        fh.truncate(size)
    return path


def _gguf_kv(key: bytes, vtype: int, payload: bytes, tensors: int = 1, kvs: int = 1) -> bytes:
    return (
        b"GGUF"
        + struct.pack("<IQQ", 3, tensors, kvs)
        + struct.pack("<Q", len(key))
        + key
        + struct.pack("<I", vtype)
        + payload
    )


def _hostile_files(tmp: Path) -> dict[str, Path]:
    mib = 1 << 20
    files = {
        "safetensors_100GB_header": _sparse(tmp / "st1", struct.pack("<Q", 100 * 10**9) + b'{"a":', 2 * mib),
        "safetensors_100MiB_header": _sparse(tmp / "st2", struct.pack("<Q", 100 * mib) + b'{"a":', 300 * mib),
        "safetensors_50MiB_header": _sparse(tmp / "st3", struct.pack("<Q", 50 * mib) + b'{"a":', 300 * mib),
        "safetensors_nested_json": _sparse(
            tmp / "st4", struct.pack("<Q", 200_000) + b'{"a":' + b"[" * 199_995, 2 * mib
        ),
        "gguf_array_2^60_u8": _sparse(tmp / "g1", _gguf_kv(b"x", 9, struct.pack("<IQ", 0, 2**60)), 2 * mib),
        "gguf_array_2^60_strings": _sparse(
            tmp / "g2", _gguf_kv(b"x", 9, struct.pack("<IQ", 8, 2**60)), 2 * mib
        ),
        "gguf_nested_arrays": _sparse(tmp / "g3", _gguf_kv(b"x", 9, struct.pack("<IQ", 9, 1) * 64), 2 * mib),
        "gguf_string_past_end": _sparse(tmp / "g4", _gguf_kv(b"x", 8, struct.pack("<Q", 2**40)), 2 * mib),
        "gguf_key_2^63": _sparse(tmp / "g5", b"GGUF" + struct.pack("<IQQQ", 3, 1, 1, 2**63), 2 * mib),
        "gguf_tensor_count_2^40": _sparse(tmp / "g6", b"GGUF" + struct.pack("<IQQ", 3, 2**40, 0), 2 * mib),
        "gguf_kv_count_2^60": _sparse(tmp / "g7", b"GGUF" + struct.pack("<IQQ", 3, 1, 2**60), 2 * mib),
        "gguf_version_999": _sparse(tmp / "g8", b"GGUF" + struct.pack("<IQQ", 999, 1, 1), 2 * mib),
        "npy_header_4GB": _sparse(tmp / "n1", b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**32 - 1), 2 * mib),
        "npy_nested_header": _sparse(
            tmp / "n2", b"\x93NUMPY\x01\x00" + struct.pack("<H", 60_000) + b"(" * 60_000, 2 * mib
        ),
        "npy_shape_claims_petabytes": _sparse(
            tmp / "n3",
            b"\x93NUMPY\x01\x00"
            + struct.pack("<H", 118)
            + b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000, 1000000000), }".ljust(117)
            + b"\n",
            2 * mib,
        ),
        "zip_eocd_claims_2^16_entries": _sparse(tmp / "z1", b"PK\x03\x04" + bytes(26), 2 * mib),
        "onnx_graph_longer_than_file": _sparse(
            tmp / "o1", b"\x08\x07\x12\x04test" + b"\x3a" + b"\xff\xff\xff\xff\x0f", 2 * mib
        ),
    }
    # The zip's end record, at the very end: 65535 entries in a 64-byte directory at offset 0.
    with files["zip_eocd_claims_2^16_entries"].open("r+b") as fh:
        fh.seek(2 * mib - 22)
        fh.write(b"PK\x05\x06" + struct.pack("<4H2IH", 0, 0, 0xFFFF, 0xFFFF, 64, 0, 0))
    return files


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _hostile_files(tmp_path_factory.mktemp("hostile"))


@pytest.mark.parametrize(
    "name",
    [
        "safetensors_100GB_header",
        "safetensors_100MiB_header",
        "safetensors_50MiB_header",
        "safetensors_nested_json",
        "gguf_array_2^60_u8",
        "gguf_array_2^60_strings",
        "gguf_nested_arrays",
        "gguf_string_past_end",
        "gguf_key_2^63",
        "gguf_tensor_count_2^40",
        "gguf_kv_count_2^60",
        "gguf_version_999",
        "npy_header_4GB",
        "npy_nested_header",
        "npy_shape_claims_petabytes",
        "zip_eocd_claims_2^16_entries",
        "onnx_graph_longer_than_file",
    ],
)
def test_lying_headers_are_malformed_within_budget(hostile: dict[str, Path], name: str) -> None:
    tracemalloc.start()
    try:
        start = time.perf_counter()
        result = identify_file(hostile[name])
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _sane(result, elapsed)
    assert result.verdict == "malformed", result.reason
    assert result.reason.startswith("malformed ")
    # The only big reads allowed: the 64 KiB head, a zip's 64 KiB tail, a bounded header.
    assert result.bytes_read <= FIRST_READ + (64 << 10) + 300_000, result.bytes_read
    assert peak < 4 << 20, f"peak {peak} bytes"


def test_safetensors_length_claims_are_refused_before_reading(hostile: dict[str, Path]) -> None:
    for name in ("safetensors_100GB_header", "safetensors_100MiB_header", "safetensors_50MiB_header"):
        result = identify_file(hostile[name])
        assert result.bytes_read <= FIRST_READ, (name, result.bytes_read)


def test_under_an_address_space_limit(hostile: dict[str, Path]) -> None:
    """In a child process limited to 512 MiB of address space, a parser that allocated from
    a claimed length would die with MemoryError; every verdict must still be "malformed"."""
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))\n"
        "from agent.modelfiles import identify_file\n"
        "for p in sys.argv[1:]:\n"
        "    r = identify_file(p)\n"
        "    print(r.verdict, r.reason.replace(chr(10), ' '))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", script, *map(str, hostile.values())],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    ).stdout.splitlines()
    assert len(out) == len(hostile)
    for line in out:
        assert line.startswith("malformed "), line
        assert "internal error" not in line, line


def test_truncated_gguf_is_malformed(tmp_path: Path) -> None:
    path, _ = make_gguf(tmp_path / "full", vocab=20_000, extra_tensor=600_000)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 1000, 300_000):
        short = tmp_path / f"cut{cut}"
        short.write_bytes(data[:cut])
        result = identify_file(short, min_model_bytes=0)
        assert result.verdict == "malformed", (cut, result.reason)
        assert "past the end" in result.reason


def test_zip_with_many_entries_is_listed_within_bounds(tmp_path: Path) -> None:
    """20,000 entries (a 1.3 MB central directory): listed up to the caps, never all of it."""
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02}.")  # first, as torch.save writes it
        for i in range(20_000):
            z.writestr(f"archive/data/{i}", b"")
    start = time.perf_counter()
    result = identify_file(path)
    _sane(result, time.perf_counter() - start)
    assert result.bytes_read <= FIRST_READ + (64 << 10) + (1 << 20) + 4096
    assert result.format == "pytorch"
    assert result.info is None or "partial" in result.info.extra.get("listing", "")


class _Boom:
    """Unpickling this creates the marker file: proof that nothing was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def test_pickles_are_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    payload = pickle.dumps({"weights": _Boom(marker)}, protocol=2)
    plain = tmp_path / "plain"
    plain.write_bytes(payload + bytes(2 << 20))
    torch_zip = tmp_path / "torch_zip"
    with zipfile.ZipFile(torch_zip, "w") as z:
        z.writestr("archive/data.pkl", payload)
        z.writestr("archive/data/0", bytes(4096))
        z.writestr("archive/version", b"3\n")
    legacy = tmp_path / "legacy"
    from agent.modelfiles.pytorch import LEGACY_MAGIC

    legacy.write_bytes(LEGACY_MAGIC + b"\x80\x02M\xe9\x03." + payload + bytes(4096))
    for path in (plain, torch_zip, legacy):
        result = identify_file(path)
        _sane(result, 0)
    assert identify_file(plain).format == "pickle"
    assert identify_file(torch_zip).verdict == "model"
    assert identify_file(legacy).format == "pytorch-legacy"
    assert not marker.exists()


def test_other_protobufs_are_not_onnx() -> None:
    """Real protobuf messages that are not ModelProto (a FileDescriptorProto, an ONNX tensor
    on its own) must not be taken for ONNX or Core ML."""
    fdp = descriptor_pb2.FileDescriptorProto()
    descriptor_pb2.DESCRIPTOR.CopyToProto(fdp)
    blob = fdp.SerializeToString()
    import numpy as np
    from onnx import numpy_helper

    tensor = numpy_helper.from_array(np.ones((512, 512), np.float32), "W").SerializeToString()
    for data in (blob, tensor, json.dumps({"a": 1}).encode() * 1000):
        result = _timed(data, len(data))
        assert result.verdict == "not_model", result.reason

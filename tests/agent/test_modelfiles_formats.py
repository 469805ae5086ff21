"""Model-file identification on real files, written by the real libraries.

Every model file here is written by its own library (gguf's GGUFWriter, safetensors, onnx,
numpy, h5py, zipfile laid out as torch.save lays it out) or, for formats whose writers are not
installable here (TFLite, Core ML), crafted byte by byte from their schemas. Each is then
renamed to something innocent and must still be identified with its format and parameter
count. The builders are plain functions so the hostile-input tests can mutate their output.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import struct
import sys
import threading
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import gguf
import h5py
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file

from agent.catalog import CatalogError
from agent.modelfiles import identify_file, identify_header, looks_like_model_quick
from agent.modelfiles.formats import default_format_catalog, parse_format_catalog
from agent.modelfiles.pytorch import LEGACY_MAGIC

INNOCENT = ("customer_support_v2.1.pdf", "notes.dat", "README")

# --- builders: each writes one real file and returns (path, expected parameter count) --------


def make_gguf(path: Path, vocab: int = 64, extra_tensor: int = 0) -> tuple[Path, int]:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("Umbra Tiny Llama")
    w.add_block_count(2)
    w.add_context_length(256)
    w.add_embedding_length(32)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"tok{i}" for i in range(vocab)])
    tensors = {
        "token_embd.weight": np.ones((64, 32), dtype=np.float16),
        "blk.0.attn_q.weight": np.ones((32, 32), dtype=np.float16),
        "blk.1.attn_q.weight": np.ones((32, 32), dtype=np.float16),
        "output_norm.weight": np.ones(32, dtype=np.float32),
    }
    if extra_tensor:
        tensors["output.weight"] = np.zeros(extra_tensor, dtype=np.float32)
    for name, arr in tensors.items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, sum(a.size for a in tensors.values())


def make_safetensors(path: Path, extra_tensor: int = 0) -> tuple[Path, int]:
    tensors = {
        "model.embed_tokens.weight": np.zeros((128, 64), np.float32),
        "model.layers.0.mlp.up_proj.weight": np.zeros((64, 96), np.float16),
        "lm_head.bias": np.zeros(128, np.float32),
    }
    if extra_tensor:
        tensors["lm_head.weight"] = np.zeros(extra_tensor, np.float16)
    save_file(tensors, str(path), metadata={"format": "pt", "note": "umbra test"})
    return path, sum(a.size for a in tensors.values())


def make_onnx(path: Path, width: int = 32) -> tuple[Path, int]:
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 64])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, width])
    weight = numpy_helper.from_array(np.ones((64, width), np.float32), "W")
    bias = numpy_helper.from_array(np.ones(width, np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["XW"]), helper.make_node("Add", ["XW", "B"], ["Y"])],
        "umbra_linear",
        [x],
        [y],
        [weight, bias],
    )
    model = helper.make_model(graph, producer_name="umbra-test", opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path, 64 * width + width


def make_npy(path: Path) -> tuple[Path, int]:
    with path.open("wb") as fh:  # np.save would append ".npy" to an innocent name
        np.save(fh, np.zeros((48, 40), np.float32))
    return path, 48 * 40


def make_npz(path: Path) -> tuple[Path, int]:
    with path.open("wb") as fh:
        np.savez(
            fh, w1=np.zeros((16, 32), np.float32), b1=np.zeros(32, np.float32), w2=np.zeros((32, 4), "<f2")
        )
    return path, 16 * 32 + 32 + 32 * 4


def make_torch_zip(path: Path, storages: int = 3, floats: int = 256) -> tuple[Path, int]:
    """The layout torch.save writes (torch/serialization.py, _save): stored entries under one
    archive folder, data.pkl first, one record per storage."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(
            "archive/data.pkl", pickle.dumps({"note": "stand-in for the pickled state dict"}, protocol=2)
        )
        z.writestr("archive/.format_version", b"1")
        z.writestr("archive/.storage_alignment", b"64")
        z.writestr("archive/byteorder", b"little")
        for i in range(storages):
            z.writestr(f"archive/data/{i}", np.zeros(floats, np.float32).tobytes())
        z.writestr("archive/version", b"3\n")
        z.writestr("archive/.data/serialization_id", b"0123456789")
    return path, storages


def make_legacy_torch(path: Path) -> tuple[Path, int]:
    body = LEGACY_MAGIC + b"\x80\x02M\xe9\x03." + pickle.dumps({"protocol_version": 1001}, protocol=2)
    path.write_bytes(body + bytes(4096))
    return path, 0


def make_keras_h5(path: Path) -> tuple[Path, int]:
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.15.0"
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {"name": "umbra_seq"}})
        grp = f.create_group("model_weights")
        grp.attrs["layer_names"] = [b"dense"]
        grp.create_dataset("dense/kernel:0", data=np.zeros((32, 16), np.float32))
    return path, 0


def make_keras_zip(path: Path, tmp: Path) -> tuple[Path, int]:
    weights = tmp / "model.weights.h5"
    with h5py.File(weights, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=np.zeros((32, 16), np.float32))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(
            "metadata.json", json.dumps({"keras_version": "3.3.3", "date_saved": "2026-01-01@00:00:00"})
        )
        z.writestr(
            "config.json",
            json.dumps({"module": "keras", "class_name": "Sequential", "config": {"name": "umbra_seq"}}),
        )
        z.write(weights, "model.weights.h5")
    return path, 0


def _fb_table(buf: bytearray, values: list[int | None]) -> tuple[int, list[int]]:
    """Append a FlatBuffer table whose fields are all 4-byte scalars or offsets (None: absent).
    Returns the table's position and each field's position (for offsets patched later)."""
    while len(buf) % 2:
        buf.append(0)
    vt = len(buf)
    buf += struct.pack("<HH", 4 + 2 * len(values), 4 + 4 * len(values))
    buf += b"".join(struct.pack("<H", 0 if v is None else 4 + 4 * i) for i, v in enumerate(values))
    while len(buf) % 4:
        buf.append(0)
    table = len(buf)
    buf += struct.pack("<i", table - vt)
    buf += b"".join(struct.pack("<I", v or 0) for v in values)
    return table, [table + 4 + 4 * i for i in range(len(values))]


def _fb_vector(buf: bytearray, data: bytes, count: int) -> int:
    while len(buf) % 4:
        buf.append(0)
    pos = len(buf)
    buf += struct.pack("<I", count) + data
    return pos


def _fb_ref(buf: bytearray, at: int, target: int) -> None:
    buf[at : at + 4] = struct.pack("<I", target - at)


def make_tflite(path: Path) -> tuple[Path, int]:
    """A TFLite model laid out per schema.fbs: Model{version, operator_codes, subgraphs,
    description, buffers}, one subgraph with an input, a 16x8 weight and an output tensor."""
    buf = bytearray(b"\0\0\0\0TFL3")
    model, mf = _fb_table(buf, [3, 1, 1, 1, 1])
    buf[0:4] = struct.pack("<I", model)
    _fb_ref(buf, mf[1], _fb_vector(buf, b"", 0))
    desc = b"MLIR Converted."
    _fb_ref(buf, mf[3], _fb_vector(buf, desc + b"\0", len(desc)))
    # Offsets only point forward: each vector is written before the tables it holds.
    # buffers: 0 = the empty sentinel, 1 = the weights
    bvec = _fb_vector(buf, bytes(8), 2)
    _fb_ref(buf, mf[4], bvec)
    empty, _ = _fb_table(buf, [None])
    _fb_ref(buf, bvec + 4, empty)
    weights_buf, wf = _fb_table(buf, [1])
    _fb_ref(buf, bvec + 8, weights_buf)
    _fb_ref(buf, wf[0], _fb_vector(buf, np.ones(16 * 8, np.float32).tobytes(), 16 * 8 * 4))
    svec = _fb_vector(buf, bytes(4), 1)
    _fb_ref(buf, mf[2], svec)
    sub, sf = _fb_table(buf, [1])
    _fb_ref(buf, svec + 4, sub)
    shapes = (((1, 16), 0), ((16, 8), 1), ((1, 8), 0))
    tvec = _fb_vector(buf, bytes(4 * len(shapes)), len(shapes))
    _fb_ref(buf, sf[0], tvec)
    for i, (shape, buffer_index) in enumerate(shapes):
        t, tf = _fb_table(buf, [1, 0, buffer_index])
        _fb_ref(buf, tvec + 4 + 4 * i, t)
        _fb_ref(buf, tf[0], _fb_vector(buf, struct.pack(f"<{len(shape)}i", *shape), len(shape)))
    path.write_bytes(bytes(buf))
    return path, 16 * 8


def _pb_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb(field: int, value: int | bytes) -> bytes:
    if isinstance(value, int):
        return _pb_varint(field << 3) + _pb_varint(value)
    return _pb_varint(field << 3 | 2) + _pb_varint(len(value)) + value


def make_coreml(path: Path) -> tuple[Path, int]:
    """A Core ML Model per Model.proto: specificationVersion 7, a description with one input,
    one output and metadata, and a neuralNetwork (field 500) holding one layer's weights."""
    description = (
        _pb(1, _pb(1, b"image"))
        + _pb(10, _pb(1, b"label"))
        + _pb(100, _pb(1, b"Umbra test classifier") + _pb(3, b"umbra"))
    )
    layer = _pb(1, b"dense") + _pb(140, _pb(5, np.ones(512, np.float32).tobytes()))
    model = _pb(1, 7) + _pb(2, description) + _pb(500, _pb(1, layer))
    path.write_bytes(model)
    return path, 0


BUILDERS: dict[str, Callable[[Path], tuple[Path, int]]] = {
    "gguf": make_gguf,
    "safetensors": make_safetensors,
    "onnx": make_onnx,
    "numpy": make_npy,
    "numpy-npz": make_npz,
    "pytorch": make_torch_zip,
    "pytorch-legacy": make_legacy_torch,
    "keras-h5": make_keras_h5,
    "tflite": make_tflite,
    "coreml": make_coreml,
}
#: Formats whose parameter count comes from the header; the others report None.
COUNTED = {"gguf", "safetensors", "onnx", "numpy", "numpy-npz", "tflite"}


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, int]]:
    tmp = tmp_path_factory.mktemp("models")
    out = {fmt: build(tmp / f"sample.{fmt}") for fmt, build in BUILDERS.items()}
    out["keras"] = make_keras_zip(tmp / "sample.keras", tmp)
    return out


# --- real models, innocent names -------------------------------------------------------------


@pytest.mark.parametrize("fmt", [*BUILDERS, "keras"])
@pytest.mark.parametrize("name", INNOCENT)
def test_real_model_renamed_is_identified(
    samples: dict[str, tuple[Path, int]], tmp_path: Path, fmt: str, name: str
) -> None:
    source, params = samples[fmt]
    target = tmp_path / name
    shutil.copyfile(source, target)
    # Well below the 1 MiB floor, so this also proves the headers are fully self-consistent.
    result = identify_file(target)
    assert result.verdict == "model", result.reason
    assert result.format == fmt
    assert result.info is not None
    assert result.info.format == fmt
    assert result.info.size_bytes == target.stat().st_size
    assert result.info.path == str(target)
    assert 0 < result.confidence <= 1
    assert result.bytes_read <= target.stat().st_size
    if fmt in COUNTED:
        assert result.info.parameter_count == params
    assert "\n" not in result.reason
    assert looks_like_model_quick(target.read_bytes()[:16])


def test_gguf_metadata(samples: dict[str, tuple[Path, int]]) -> None:
    path, params = samples["gguf"]
    info = identify_file(path).info
    assert info is not None
    assert (info.architecture, info.model_name, info.quantization) == ("llama", "Umbra Tiny Llama", "F16")
    assert info.tensor_count == 4
    assert info.parameter_count == params
    assert info.extra["block_count"] == "2"
    assert info.extra["context_length"] == "256"
    assert info.extra["vocab_size"] == "64"
    assert info.extra["tokenizer"] == "llama"


def test_gguf_large_vocabulary_grows_the_read_in_bounded_steps(tmp_path: Path) -> None:
    """A 100k-token vocabulary puts the tensor infos past 1 MiB: the head grows to reach them;
    with a smaller limit, the metadata read so far is reported and the reason says so."""
    path, params = make_gguf(tmp_path / "blob", vocab=100_000)
    size = path.stat().st_size
    full = identify_file(path)
    assert full.verdict == "model" and full.info is not None
    assert full.info.parameter_count == params
    assert full.info.extra["vocab_size"] == "100000"
    assert 1 << 20 < full.bytes_read <= size
    partial = identify_file(path, max_header_bytes=256 << 10, min_model_bytes=0)
    assert partial.verdict == "model" and partial.info is not None
    assert partial.bytes_read <= 256 << 10
    assert partial.info.architecture == "llama"
    assert partial.info.parameter_count is None
    assert "past the bytes read" in partial.reason


def test_safetensors_details(samples: dict[str, tuple[Path, int]]) -> None:
    info = identify_file(samples["safetensors"][0]).info
    assert info is not None
    assert info.tensor_count == 3
    assert info.quantization == "F32"
    assert info.extra["meta.format"] == "pt"
    assert "F16" in info.extra["dtypes"]


def test_onnx_details(samples: dict[str, tuple[Path, int]]) -> None:
    info = identify_file(samples["onnx"][0]).info
    assert info is not None
    assert info.extra["producer"] == "umbra-test"
    assert info.extra["opset"] == "17"
    assert info.extra["nodes"] == "2"
    assert info.tensor_count == 2
    assert info.model_name == "umbra_linear"


def test_pytorch_details(samples: dict[str, tuple[Path, int]]) -> None:
    info = identify_file(samples["pytorch"][0]).info
    assert info is not None
    assert info.tensor_count == 3
    assert info.extra["storage_bytes"] == str(3 * 1024)


def test_keras_tflite_coreml_details(samples: dict[str, tuple[Path, int]]) -> None:
    keras_info = identify_file(samples["keras"][0]).info
    assert keras_info is not None
    assert keras_info.architecture == "Sequential"
    assert keras_info.extra["keras_version"] == "3.3.3"
    h5_info = identify_file(samples["keras-h5"][0]).info
    assert h5_info is not None and h5_info.architecture == "Sequential"
    tfl = identify_file(samples["tflite"][0]).info
    assert tfl is not None
    assert (tfl.tensor_count, tfl.quantization) == (3, "FLOAT32")
    assert tfl.extra["description"] == "MLIR Converted."
    cml = identify_file(samples["coreml"][0]).info
    assert cml is not None
    assert cml.architecture == "neuralNetwork"
    assert cml.model_name == "Umbra test classifier"
    assert cml.extra["specification_version"] == "7"


def test_identify_header_matches_identify_file(samples: dict[str, tuple[Path, int]]) -> None:
    for fmt, (path, _) in samples.items():
        data = path.read_bytes()
        by_file = identify_file(path)
        by_head = identify_header(data, len(data), path.name)
        assert (by_head.verdict, by_head.format, by_head.reason) == (
            by_file.verdict,
            by_file.format,
            by_file.reason,
        ), fmt
        assert by_head.info is not None and by_head.info.path == ""


def test_zip_from_the_front_only(samples: dict[str, tuple[Path, int]]) -> None:
    """A caller holding only the first bytes of a torch archive still gets "pytorch" (from the
    local headers), with no storage count; given the tail too, the count is there."""
    data = samples["pytorch"][0].read_bytes()
    size = 50 << 20
    front = identify_header(data[:1024], size)
    assert front.verdict == "model" and front.format == "pytorch"
    assert front.info is not None and front.info.tensor_count is None
    both = identify_header(data[:1024], len(data), tail=data[-2048:])
    assert both.verdict == "model", both.reason
    assert both.info is not None and both.info.tensor_count == 3


def test_coreml_package_directory(samples: dict[str, tuple[Path, int]], tmp_path: Path) -> None:
    package = tmp_path / "Classifier.mlpackage"
    model_dir = package / "Data" / "com.apple.CoreML"
    (model_dir / "weights").mkdir(parents=True)
    shutil.copyfile(samples["coreml"][0], model_dir / "model.mlmodel")
    (model_dir / "weights" / "weight.bin").write_bytes(bytes(2 << 20))
    (package / "Manifest.json").write_text(
        json.dumps(
            {
                "fileFormatVersion": "1.0.0",
                "itemInfoEntries": {"X": {"path": "com.apple.CoreML/model.mlmodel"}},
            }
        )
    )
    result = identify_file(package)
    assert result.verdict == "model", result.reason
    assert result.format == "coreml-package"
    assert result.info is not None and result.info.size_bytes > 2 << 20
    plain = tmp_path / "just_a_dir"
    plain.mkdir()
    assert identify_file(plain).verdict == "not_model"


# --- not models ------------------------------------------------------------------------------


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\0" + bytes(range(16)) * 3 for _ in range(16))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _not_models(tmp: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        files[name] = tmp / name
        files[name].write_bytes(data)

    put("text.txt", ("The quarterly report is attached.\n" * 40_000).encode())
    put("picture.png", _png())
    put("tiny_gguf.bin", b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + bytes(176))
    put("random.bin", random.Random(7).randbytes(2 << 20))
    put("model.gguf", b"not a model at all, just named like one\n" * 100)
    put("data.pkl", pickle.dumps({"a": list(range(100_000))}, protocol=4))
    put("objects.npy", b"")
    with files["objects.npy"].open("wb") as fh:
        np.save(fh, np.array([{"a": 1}] * 1000, dtype=object), allow_pickle=True)
    files["docs.zip"] = tmp / "docs.zip"
    with zipfile.ZipFile(files["docs.zip"], "w", compression=zipfile.ZIP_DEFLATED) as z:
        for i in range(20):
            z.writestr(f"docs/chapter{i}.txt", "Lorem ipsum dolor sit amet. " * 5000)
    files["elf"] = tmp / "elf"
    shutil.copyfile(Path(sys.executable).resolve(), files["elf"])
    files["science.h5"] = tmp / "science.h5"
    with h5py.File(files["science.h5"], "w") as f:
        f.create_dataset("measurements", data=np.zeros((512, 512), np.float32))
    files["scheduler.pt"] = tmp / "scheduler.pt"
    with zipfile.ZipFile(files["scheduler.pt"], "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"last_epoch": 3}, protocol=2))
        z.writestr("archive/version", b"3\n")
        z.writestr("archive/byteorder", b"little")
    return files


@pytest.fixture(scope="module")
def not_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _not_models(tmp_path_factory.mktemp("not_models"))


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("text.txt", ""),
        ("picture.png", ""),
        ("tiny_gguf.bin", "gguf"),
        ("random.bin", ""),
        ("model.gguf", ""),
        ("data.pkl", "pickle"),
        ("objects.npy", "numpy"),
        ("docs.zip", "zip"),
        ("elf", ""),
        ("science.h5", "hdf5"),
        ("scheduler.pt", "pytorch"),
    ],
)
def test_not_models(not_models: dict[str, Path], name: str, fmt: str) -> None:
    result = identify_file(not_models[name])
    assert result.verdict == "not_model", result.reason
    assert result.info is None
    assert result.format == fmt
    assert result.bytes_read <= (1 << 20) + (64 << 10) + 128


def test_reasons_say_why(not_models: dict[str, Path]) -> None:
    assert "named like gguf" in identify_file(not_models["model.gguf"]).reason
    assert "too small" in identify_file(not_models["tiny_gguf.bin"]).reason
    assert "pickle" in identify_file(not_models["objects.npy"]).reason


@pytest.mark.parametrize("name", ["text.txt", "picture.png", "docs.zip", "elf", "random.bin"])
def test_quick_check_rejects_everyday_files(not_models: dict[str, Path], name: str) -> None:
    assert not looks_like_model_quick(not_models[name].read_bytes()[:16])


def test_fifo_and_missing_files_never_block(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    results: list[str] = []
    worker = threading.Thread(target=lambda: results.append(identify_file(fifo).verdict), daemon=True)
    worker.start()
    worker.join(5)
    assert results == ["not_model"]
    assert identify_file(tmp_path / "absent").verdict == "not_model"
    assert identify_file("/dev/zero").verdict == "not_model"


def test_small_file_floor_is_configurable(samples: dict[str, tuple[Path, int]], tmp_path: Path) -> None:
    """A valid model with trailing bytes is not fully self-consistent: below the floor it is
    not a model, above a lowered floor it is."""
    data = samples["safetensors"][0].read_bytes() + bytes(100)
    path = tmp_path / "weights"
    path.write_bytes(data)
    assert identify_file(path).verdict == "not_model"
    assert identify_file(path, min_model_bytes=len(data)).verdict == "model"


def test_identification_is_fast_for_every_sample(samples: dict[str, tuple[Path, int]]) -> None:
    for fmt, (path, _) in samples.items():
        start = time.perf_counter()
        for _ in range(20):
            identify_file(path)
        assert (time.perf_counter() - start) / 20 < 0.01, fmt


# --- the catalog -------------------------------------------------------------------------------


def test_catalog_entries_and_sources() -> None:
    cat = default_format_catalog()
    for fmt in [*BUILDERS, "keras", "coreml-package"]:
        entry = cat.get(fmt)
        assert entry is not None and entry.model, fmt
        assert entry.source.startswith("https://")
    assert not cat.formats["hdf5"].model


def test_catalog_gguf_tables_agree_with_the_gguf_package() -> None:
    cat = default_format_catalog()
    for qtype, (block, size) in gguf.GGML_QUANT_SIZES.items():
        entry = cat.gguf_tensor_types[int(qtype)]
        assert (entry.name, entry.block, entry.bytes) == (qtype.name, block, size)
    for ftype in gguf.LlamaFileType:
        if ftype.name != "GUESSED":
            assert cat.gguf_file_types[int(ftype)] == ftype.name.removeprefix("MOSTLY_").removeprefix("ALL_")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("schema_version = 2", "schema_version"),
        ("schema_version = 1\nbogus = 1", "unknown top-level"),
        (
            'schema_version = 1\n[[format]]\nid = "x"\nname = "X"\nmodel = true\nconfidence = 0.5\n'
            'signature = "s"\nsource = "http://insecure"',
            "https",
        ),
    ],
)
def test_catalog_loader_is_strict(text: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        parse_format_catalog(text)

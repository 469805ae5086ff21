"""Model-file identification cost per format: time per file and bytes read per file.

Files are written by the real libraries (gguf, safetensors, onnx, numpy, h5py; dev extras),
and for the large-model cases only the header is real: a Llama-3-8B-shaped GGUF (128k-token
vocabulary, 280k merges, 291 Q4_K tensor infos) and an 8B-shaped safetensors shard are
extended to their full size as sparse files, so the parser sees what it would see on disk.
Goals (model-artifact issue): under 1 ms per file, bytes read bounded whatever the file size.

    .venv/bin/python bench/bench_modelfiles.py [--rounds 50]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "agent"))
from test_modelfiles_formats import (  # the tests' builders: one way to write each format
    _not_models,
    make_coreml,
    make_gguf,
    make_keras_h5,
    make_keras_zip,
    make_npy,
    make_npz,
    make_onnx,
    make_safetensors,
    make_tflite,
    make_torch_zip,
)

from agent.modelfiles import identify_file, identify_header, looks_like_model_quick


def llama_gguf(path: Path, vocab: int, merges: int) -> Path:
    """A GGUF whose header is a Llama-3-8B Q4_K_M's (metadata, vocabulary, tensor infos); the
    tensor data is a hole."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("Meta Llama 3 8B Instruct (shape only)")
    w.add_block_count(32)
    w.add_context_length(8192)
    w.add_embedding_length(4096)
    w.add_feed_forward_length(14336)
    w.add_head_count(32)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"token_{i}" for i in range(vocab)])
    w.add_token_types([1] * vocab)
    if merges:
        w.add_token_merges([f"a{i} b{i}" for i in range(merges)])
    w.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}" * 20)
    shapes = {
        "token_embd.weight": (4096, vocab),
        "output.weight": (4096, vocab),
        "output_norm.weight": (4096,),
    }
    for b in range(32):
        for name, shape in (
            ("attn_q", (4096, 4096)),
            ("attn_k", (4096, 1024)),
            ("attn_v", (4096, 1024)),
            ("attn_output", (4096, 4096)),
            ("ffn_gate", (4096, 14336)),
            ("ffn_up", (4096, 14336)),
            ("ffn_down", (14336, 4096)),
            ("attn_norm", (4096,)),
            ("ffn_norm", (4096,)),
        ):
            shapes[f"blk.{b}.{name}.weight"] = shape
    total = 0
    for name, shape in shapes.items():
        elements = int(np.prod(shape))
        if len(shape) == 1:
            nbytes, raw = elements * 4, gguf.GGMLQuantizationType.F32
        else:
            nbytes, raw = elements // 256 * 144, gguf.GGMLQuantizationType.Q4_K
        total += -(-nbytes // 32) * 32
        w.add_tensor_info(name, list(reversed(shape)), np.dtype(np.float32), nbytes, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    header = path.stat().st_size
    with path.open("r+b") as fh:
        fh.truncate(-(-header // 32) * 32 + total)
    return path


def big_safetensors(path: Path) -> Path:
    """An 8B-shaped shard header (291 BF16 tensors); the data is a hole."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    shapes = [("model.embed_tokens.weight", (128256, 4096))]
    for b in range(32):
        for name, shape in (
            ("self_attn.q_proj", (4096, 4096)),
            ("self_attn.k_proj", (1024, 4096)),
            ("self_attn.v_proj", (1024, 4096)),
            ("self_attn.o_proj", (4096, 4096)),
            ("mlp.gate_proj", (14336, 4096)),
            ("mlp.up_proj", (14336, 4096)),
            ("mlp.down_proj", (4096, 14336)),
            ("input_layernorm", (4096,)),
            ("post_attention_layernorm", (4096,)),
        ):
            shapes.append((f"model.layers.{b}.{name}.weight", shape))
    shapes += [("model.norm.weight", (4096,)), ("lm_head.weight", (128256, 4096))]
    for name, shape in shapes:
        nbytes = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        fh.truncate(8 + len(raw) + offset)
    return path


def median_us(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="umbra-bench-modelfiles-"))
    try:
        cases: list[tuple[str, Path]] = [
            ("gguf, tiny (4 tensors)", make_gguf(tmp / "tiny.gguf")[0]),
            ("gguf, Llama-2-7B shape (32k vocab)", llama_gguf(tmp / "l2.gguf", 32_000, 0)),
            ("gguf, Llama-3-8B shape (128k + merges)", llama_gguf(tmp / "l3.gguf", 128_256, 280_147)),
            ("safetensors, tiny", make_safetensors(tmp / "tiny.safetensors")[0]),
            ("safetensors, 8B shape (291 tensors)", big_safetensors(tmp / "big.safetensors")),
            ("pytorch zip (300 storages)", make_torch_zip(tmp / "model.pt", storages=300)[0]),
            ("onnx (2 initializers)", make_onnx(tmp / "m.onnx")[0]),
            ("numpy .npy", make_npy(tmp / "a.npy")[0]),
            ("numpy .npz (3 arrays)", make_npz(tmp / "a.npz")[0]),
            ("keras .h5", make_keras_h5(tmp / "k.h5")[0]),
            ("keras .keras zip", make_keras_zip(tmp / "k.keras", tmp)[0]),
            ("tflite", make_tflite(tmp / "m.tflite")[0]),
            ("coreml .mlmodel", make_coreml(tmp / "m.mlmodel")[0]),
        ]
        (tmp / "others").mkdir()
        others = _not_models(tmp / "others")
        cases += [
            ("not a model: 1.4 MB text", others["text.txt"]),
            ("not a model: 2 MiB random", others["random.bin"]),
            ("not a model: deflated zip", others["docs.zip"]),
            ("not a model: ELF (python)", others["elf"]),
        ]
        rows = [("file", "size", "verdict", "format", "params", "file µs", "header µs", "MB read")]
        for label, path in cases:
            result = identify_file(path)
            head = path.open("rb").read(result.bytes_read)
            size = path.stat().st_size
            slow = result.bytes_read > 1 << 20
            rounds = max(3, args.rounds // 10) if slow else args.rounds
            file_us = median_us(lambda p=path: identify_file(p), rounds)
            head_us = median_us(lambda h=head, s=size: identify_header(h, s), rounds)
            params = result.info.parameter_count if result.info else None
            rows.append(
                (
                    label,
                    _size(size),
                    result.verdict,
                    result.format or "-",
                    f"{params:,}" if params else "-",
                    f"{file_us:,.0f}",
                    f"{head_us:,.0f}",
                    f"{result.bytes_read / 1e6:.3f}",
                )
            )
        quick_heads = [p.open("rb").read(16) for _, p in cases]
        quick_ns = median_us(lambda: [looks_like_model_quick(h) for h in quick_heads], args.rounds * 10)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for n, row in enumerate(rows):
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
            if n == 0:
                print("  ".join("-" * w for w in widths))
        print(f"\nlooks_like_model_quick: {quick_ns * 1000 / len(quick_heads):.0f} ns per 16-byte head")
        print(
            "file µs: identify_file (open, reads, parse; page cache warm); header µs: identify_header on the"
        )
        print("same bytes (parse only). Goal: < 1 ms per file; MB read bounded by max_header_bytes (16 MiB).")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


if __name__ == "__main__":
    main()

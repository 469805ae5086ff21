"""Fine-tuning artifacts: what Hugging Face Trainer, peft and DeepSpeed leave on disk.

Here names do matter (they are these libraries' conventions: `checkpoint-500/`,
`adapter_model.safetensors`, `trainer_state.json`), but a name alone is cheap to fake or to
collide with, so the content is checked wherever that costs one small read: an adapter config
must carry peft's `peft_type`, a trainer state its `global_step`/`log_history`, an optimizer
state must start like a torch checkpoint (zip or pickle), and an adapter's safetensors header
must name LoRA tensors when no config sits beside it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Final

__all__ = ["TRAINING_LABELS", "classify_training_artifact"]

TRAINING_LABELS: Final = frozenset(
    {
        "lora_adapter",
        "peft_adapter",
        "trainer_checkpoint",
        "deepspeed_checkpoint",
        "trainer_state",
        "optimizer_state",
        "scheduler_state",
        "rng_state",
        "training_args",
    }
)
#: peft types of the LoRA family (peft.PeftType); other peft types are "peft_adapter".
_LORA_FAMILY: Final = frozenset({"LORA", "ADALORA", "LOHA", "LOKR", "VERA", "XLORA", "RANDLORA", "MISS"})
_MAX_JSON: Final = 1 << 20
_HEAD: Final = 64 << 10
_CHECKPOINT_DIR_RE: Final = re.compile(r"checkpoint-\d+")
_DEEPSPEED_DIR_RE: Final = re.compile(r"global_step\d+")
_CHECKPOINT_FILES: Final = (
    "trainer_state.json",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state.pth",
    "training_args.bin",
)
_TORCH_STARTS: Final = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
_SCALAR_FILES: Final = {
    "optimizer.pt": "optimizer_state",
    "optimizer.bin": "optimizer_state",
    "scheduler.pt": "scheduler_state",
    "training_args.bin": "training_args",
}
_ADAPTER_FILES: Final = ("adapter_model.safetensors", "adapter_model.bin")
_RNG_RE: Final = re.compile(r"rng_state(?:_\d+)?\.pth")
_DS_OPTIM_RE: Final = re.compile(r".*optim_states\.pt")


def classify_training_artifact(path: Path | str) -> str | None:
    """A label from TRAINING_LABELS when `path` is a fine-tuning artifact, else None. Never
    raises; reads at most a few small files (bounded)."""
    p = Path(path)
    try:
        if p.is_dir():
            return _directory(p)
        if p.is_file():
            return _file(p)
    except (OSError, ValueError):
        return None
    return None


def _directory(d: Path) -> str | None:
    present = {name for name in _CHECKPOINT_FILES if (d / name).is_file()}
    if _CHECKPOINT_DIR_RE.fullmatch(d.name) and (
        ("trainer_state.json" in present and _trainer_state(d / "trainer_state.json")) or len(present) >= 2
    ):
        return "trainer_checkpoint"
    if {"trainer_state.json", "optimizer.pt"} <= present and _trainer_state(d / "trainer_state.json"):
        return "trainer_checkpoint"
    if _DEEPSPEED_DIR_RE.fullmatch(d.name):
        for i, child in enumerate(d.iterdir()):
            if i >= 256:
                break
            if _DS_OPTIM_RE.fullmatch(child.name) and _torch_like(child):
                return "deepspeed_checkpoint"
    config = d / "adapter_config.json"
    if config.is_file() and any((d / n).is_file() for n in _ADAPTER_FILES):
        return _adapter_label(config)
    return None


def _file(f: Path) -> str | None:
    name = f.name
    if name in _ADAPTER_FILES:
        config = f.with_name("adapter_config.json")
        label = _adapter_label(config) if config.is_file() else None
        if label is None and name.endswith(".safetensors") and _safetensors_has_lora(f):
            label = "lora_adapter"
        return label
    if name == "adapter_config.json":
        return _adapter_label(f)
    if name == "trainer_state.json":
        return "trainer_state" if _trainer_state(f) else None
    if name in _SCALAR_FILES:
        return _SCALAR_FILES[name] if _torch_like(f) else None
    if _RNG_RE.fullmatch(name):
        return "rng_state" if _torch_like(f) else None
    if _DS_OPTIM_RE.fullmatch(name) and _DEEPSPEED_DIR_RE.fullmatch(f.parent.name):
        return "optimizer_state" if _torch_like(f) else None
    return None


def _read(f: Path, limit: int) -> bytes | None:
    with f.open("rb") as fh:
        raw = fh.read(limit + 1)
    return None if len(raw) > limit else raw


def _json(f: Path) -> object:
    raw = _read(f, _MAX_JSON)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _adapter_label(config: Path) -> str | None:
    doc = _json(config)
    if not isinstance(doc, dict):
        return None
    peft_type = doc.get("peft_type")
    if not isinstance(peft_type, str) or not peft_type:
        return None
    return "lora_adapter" if peft_type.upper() in _LORA_FAMILY else "peft_adapter"


def _trainer_state(f: Path) -> bool:
    doc = _json(f)
    return isinstance(doc, dict) and ("global_step" in doc or "log_history" in doc)


def _torch_like(f: Path) -> bool:
    with f.open("rb") as fh:
        head = fh.read(8)
    return head.startswith(_TORCH_STARTS)


def _safetensors_has_lora(f: Path) -> bool:
    with f.open("rb") as fh:
        head = fh.read(_HEAD)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    n = int.from_bytes(head[:8], "little")
    return b"lora_A" in head[8 : 8 + n] or b"lora_B" in head[8 : 8 + n]

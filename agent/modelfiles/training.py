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
from pathlib import Path
from typing import Final

from agent.catalog.training import LABELS, TrainingCatalog, default_training_catalog

__all__ = ["TRAINING_LABELS", "classify_training_artifact"]

TRAINING_LABELS: Final = LABELS
#: peft types of the LoRA family (peft.PeftType); other peft types are "peft_adapter".
_LORA_FAMILY: Final = frozenset({"LORA", "ADALORA", "LOHA", "LOKR", "VERA", "XLORA", "RANDLORA", "MISS"})
_MAX_JSON: Final = 1 << 20
_HEAD: Final = 64 << 10
_MAX_CHILDREN: Final = 256
_TORCH_STARTS: Final = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def classify_training_artifact(path: Path | str) -> str | None:
    """A label from TRAINING_LABELS when `path` is a fine-tuning artifact, else None. Never
    raises; reads at most a few small files (bounded). The names and what each is confirmed by
    come from agent/catalog/training.toml."""
    p = Path(path)
    try:
        if p.is_dir():
            return _directory(p, default_training_catalog())
        if p.is_file():
            return _file(p, default_training_catalog())
    except (OSError, ValueError):
        return None
    return None


def _directory(d: Path, catalog: TrainingCatalog) -> str | None:
    named = catalog.confirmable_dir(d.name)
    for checkpoint in catalog.confirmed_by("trainer_checkpoint"):
        present = {m: catalog.confirmable_file(m) for m in checkpoint.members if (d / m).is_file()}
        state = next(
            (d / m for m, e in present.items() if e is not None and e.confirm == "trainer_state"), None
        )
        if named is checkpoint and ((state is not None and _trainer_state(state)) or len(present) >= 2):
            return checkpoint.label
        # Saved by a Trainer under another name: a trainer state with its optimizer beside it.
        optimizer = any(e is not None and e.label == "optimizer_state" for e in present.values())
        if state is not None and optimizer and _trainer_state(state):
            return checkpoint.label
    if named is not None and named.confirm == "deepspeed_checkpoint":
        for i, child in enumerate(d.iterdir()):
            if i >= _MAX_CHILDREN:
                break
            found = catalog.confirmable_file(child.name)
            if found is not None and found.confirm == "deepspeed_optimizer" and _torch_like(child):
                return named.label
    # A PEFT adapter saved with save_pretrained: its configuration beside its weights.
    for weights in catalog.confirmed_by("peft_adapter"):
        for config_name in weights.members:
            config = d / config_name
            configs = (e for e in catalog.confirmed_by("peft_config") if e.members)
            if config.is_file() and any((d / n).is_file() for e in configs for n in e.members):
                return _adapter_label(config)
    return None


def _file(f: Path, catalog: TrainingCatalog) -> str | None:
    entry = catalog.confirmable_file(f.name)
    if entry is None:
        return None
    if entry.confirm == "peft_adapter":
        configs = (f.with_name(n) for n in entry.members)
        label = next((_adapter_label(c) for c in configs if c.is_file()), None)
        if label is None and f.name.endswith(".safetensors") and _safetensors_has_lora(f):
            label = entry.label
        return label
    if entry.confirm == "peft_config":
        return _adapter_label(f)
    if entry.confirm == "trainer_state":
        return entry.label if _trainer_state(f) else None
    if entry.confirm == "torch":
        return entry.label if _torch_like(f) else None
    if entry.confirm == "deepspeed_optimizer":
        parent = catalog.confirmable_dir(f.parent.name)
        in_checkpoint = parent is not None and parent.confirm == "deepspeed_checkpoint"
        return entry.label if in_checkpoint and _torch_like(f) else None
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

"""Fine-tuning artifacts (HF Trainer, peft, DeepSpeed) and Ollama's blob store.

The trees are laid out as the libraries write them: `checkpoint-N/` with trainer_state.json,
optimizer.pt, scheduler.pt and rng_state.pth; a peft adapter directory; Ollama's
`manifests/<registry>/<namespace>/<model>/<tag>` JSON pointing at `blobs/sha256-<hex>`.
Look-alikes with the right names and the wrong content must not match.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file
from test_modelfiles_formats import make_gguf, make_torch_zip

from agent.modelfiles import (
    TRAINING_LABELS,
    classify_training_artifact,
    identify_file,
    ollama_blob_names,
    read_ollama_manifest,
)
from agent.modelfiles.ollama import default_ollama_model_dirs, display_name, iter_ollama_manifests

ADAPTER_CONFIG = {
    "peft_type": "LORA",
    "task_type": "CAUSAL_LM",
    "r": 8,
    "lora_alpha": 16,
    "target_modules": ["q_proj", "v_proj"],
    "base_model_name_or_path": "meta-llama/Llama-3.2-1B",
}


def _torch_file(path: Path) -> Path:
    make_torch_zip(path, storages=2)
    return path


def _checkpoint(root: Path, step: int = 500) -> Path:
    ckpt = root / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(
        json.dumps({"global_step": step, "epoch": 1.0, "log_history": [{"loss": 1.23, "step": step}]})
    )
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
        _torch_file(ckpt / name)
    return ckpt


def _adapter(root: Path, peft_type: str = "LORA", with_config: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            "base_model.model.layers.0.self_attn.q_proj.lora_A.weight": np.zeros((8, 64), np.float32),
            "base_model.model.layers.0.self_attn.q_proj.lora_B.weight": np.zeros((64, 8), np.float32),
        },
        str(root / "adapter_model.safetensors"),
    )
    if with_config:
        (root / "adapter_config.json").write_text(json.dumps({**ADAPTER_CONFIG, "peft_type": peft_type}))
    return root


def test_trainer_checkpoint(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "run")
    assert classify_training_artifact(ckpt) == "trainer_checkpoint"
    assert classify_training_artifact(ckpt / "trainer_state.json") == "trainer_state"
    assert classify_training_artifact(ckpt / "optimizer.pt") == "optimizer_state"
    assert classify_training_artifact(ckpt / "scheduler.pt") == "scheduler_state"
    assert classify_training_artifact(ckpt / "rng_state.pth") == "rng_state"
    assert classify_training_artifact(ckpt / "training_args.bin") == "training_args"
    assert classify_training_artifact(str(ckpt)) == "trainer_checkpoint"


def test_checkpoint_named_otherwise_is_found_by_its_content(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "run")
    renamed = ckpt.rename(tmp_path / "final")
    assert classify_training_artifact(renamed) == "trainer_checkpoint"


def test_lora_adapter(tmp_path: Path) -> None:
    adapter = _adapter(tmp_path / "my-adapter")
    assert classify_training_artifact(adapter) == "lora_adapter"
    assert classify_training_artifact(adapter / "adapter_model.safetensors") == "lora_adapter"
    assert classify_training_artifact(adapter / "adapter_config.json") == "lora_adapter"
    # The weights are a model file in their own right.
    assert identify_file(adapter / "adapter_model.safetensors").format == "safetensors"


def test_adapter_without_config_is_judged_by_its_tensor_names(tmp_path: Path) -> None:
    adapter = _adapter(tmp_path / "bare", with_config=False)
    assert classify_training_artifact(adapter / "adapter_model.safetensors") == "lora_adapter"


def test_other_peft_types(tmp_path: Path) -> None:
    adapter = _adapter(tmp_path / "prefix", peft_type="PREFIX_TUNING")
    assert classify_training_artifact(adapter) == "peft_adapter"


def test_deepspeed_checkpoint(tmp_path: Path) -> None:
    step = tmp_path / "global_step1200"
    step.mkdir()
    _torch_file(step / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt")
    _torch_file(step / "zero_pp_rank_0_mp_rank_00_model_states.pt")
    assert classify_training_artifact(step) == "deepspeed_checkpoint"
    assert (
        classify_training_artifact(step / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt")
        == "optimizer_state"
    )


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("adapter_config.json", b'{"r": 8, "lora_alpha": 16}'),  # no peft_type
        ("adapter_config.json", b"not json"),
        ("trainer_state.json", b'{"name": "my app state"}'),
        ("optimizer.pt", b"plain text notes about the optimizer"),
        ("scheduler.pt", b""),
        ("rng_state.pth", b"#!/bin/sh\n"),
        ("adapter_model.safetensors", b"hello"),
        ("notes.txt", b"checkpoint"),
    ],
)
def test_look_alikes_are_not_training_artifacts(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert classify_training_artifact(path) is None


def test_look_alike_directories(tmp_path: Path) -> None:
    fake = tmp_path / "checkpoint-3"
    fake.mkdir()
    (fake / "trainer_state.json").write_text('{"theme": "dark"}')
    assert classify_training_artifact(fake) is None
    assert classify_training_artifact(tmp_path / "missing") is None
    assert classify_training_artifact(tmp_path) is None


def test_labels_are_declared(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "r")
    labels = {classify_training_artifact(p) for p in [ckpt, *ckpt.iterdir()]}
    assert labels - {None} <= TRAINING_LABELS


# --- Ollama ------------------------------------------------------------------------------------


def _ollama_store(root: Path) -> tuple[Path, Path, str]:
    """~/.ollama/models with llama3.2:latest (and an alias tag) and an hf.co model."""
    models = root / ".ollama" / "models"
    blobs = models / "blobs"
    blobs.mkdir(parents=True)
    weights, _ = make_gguf(root / "weights.gguf")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    blob = blobs / f"sha256-{digest}"
    shutil.move(weights, blob)
    template = b"{{ .Prompt }}"
    template_digest = hashlib.sha256(template).hexdigest()
    (blobs / f"sha256-{template_digest}").write_bytes(template)

    def manifest(registry: str, namespace: str, model: str, tag: str) -> None:
        path = models / "manifests" / registry / namespace / model / tag
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "config": {
                        "mediaType": "application/vnd.docker.container.image.v1+json",
                        "digest": "sha256:" + "0" * 64,
                        "size": 10,
                    },
                    "layers": [
                        {
                            "mediaType": "application/vnd.ollama.image.model",
                            "digest": f"sha256:{digest}",
                            "size": blob.stat().st_size,
                        },
                        {
                            "mediaType": "application/vnd.ollama.image.template",
                            "digest": f"sha256:{template_digest}",
                            "size": len(template),
                        },
                    ],
                }
            )
        )

    manifest("registry.ollama.ai", "library", "llama3.2", "latest")
    manifest("registry.ollama.ai", "library", "llama3.2", "1b")
    manifest("hf.co", "bartowski", "Llama-3.2-1B-Instruct-GGUF", "Q4_K_M")
    return models, blob, digest


def test_ollama_blobs_are_named(tmp_path: Path) -> None:
    models, blob, _ = _ollama_store(tmp_path)
    names = ollama_blob_names(models)
    assert names == {
        blob: ["hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "llama3.2:1b", "llama3.2:latest"]
    }
    # ... and the blob itself, with no extension, is GGUF by content.
    result = identify_file(blob)
    assert result.verdict == "model" and result.format == "gguf"


def test_ollama_manifest_details(tmp_path: Path) -> None:
    models, blob, digest = _ollama_store(tmp_path)
    manifest = read_ollama_manifest(
        models / "manifests" / "registry.ollama.ai" / "library" / "llama3.2" / "latest"
    )
    assert manifest is not None
    assert manifest.name == "llama3.2:latest"
    assert [layer.kind for layer in manifest.layers] == ["model", "template"]
    assert manifest.weights[0].blob == blob
    assert manifest.weights[0].digest == f"sha256:{digest}"
    assert len(list(iter_ollama_manifests(models))) == 3
    assert len(list(iter_ollama_manifests(models, max_manifests=1))) == 1
    assert models in default_ollama_model_dirs(home=tmp_path)


def test_display_names() -> None:
    assert display_name("registry.ollama.ai", "library", "qwen3", "8b") == "qwen3:8b"
    assert display_name("registry.ollama.ai", "someone", "tuned", "latest") == "someone/tuned:latest"
    assert display_name("hf.co", "org", "repo", "Q8_0") == "hf.co/org/repo:Q8_0"


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        b'{"layers": "nope"}',
        json.dumps(
            {
                "layers": [
                    {"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:../../etc/passwd"}
                ]
            }
        ).encode(),
        b"[" * 100_000,
        b" " * (2 << 20),
    ],
)
def test_bad_manifests_are_ignored(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "models" / "manifests" / "registry.ollama.ai" / "library" / "x" / "latest"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    assert read_ollama_manifest(path) is None
    assert ollama_blob_names(tmp_path / "models") == {}


def test_manifest_outside_a_store_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "latest"
    path.write_text(json.dumps({"layers": []}))
    assert read_ollama_manifest(path) is None
    zipped = tmp_path / "z.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("a", "b")
    assert read_ollama_manifest(zipped) is None

"""Ollama's model store: which content-addressed blob is which model.

Ollama keeps weights as `blobs/sha256-<hex>` (GGUF inside, no name) and names them in JSON
manifests at `manifests/<registry>/<namespace>/<model>/<tag>`, whose layers point at blobs by
digest (`application/vnd.ollama.image.model` for the weights; adapter and projector layers
too). Reading the manifests turns an anonymous 4 GB blob into "llama3.2:latest". Everything is
bounded: manifest size, layer count, manifests walked.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "OllamaLayer",
    "OllamaManifest",
    "default_ollama_model_dirs",
    "iter_ollama_manifests",
    "ollama_blob_names",
    "read_ollama_manifest",
]

DEFAULT_REGISTRY: Final = "registry.ollama.ai"
DEFAULT_NAMESPACE: Final = "library"
MAX_MANIFEST_BYTES: Final = 1 << 20
MAX_LAYERS: Final = 256
MAX_MANIFESTS: Final = 10_000
_LAYER_PREFIX: Final = "application/vnd.ollama.image."
_DIGEST_RE: Final = re.compile(r"sha256[:-]([0-9a-f]{64})")
_PART_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,254}")


@dataclass(frozen=True)
class OllamaLayer:
    kind: str  # "model", "adapter", "projector", "template", "params", "license", ...
    digest: str  # "sha256:<hex>"
    size: int
    blob: Path  # <models>/blobs/sha256-<hex> (may not exist: a pull in progress)


@dataclass(frozen=True)
class OllamaManifest:
    name: str  # as `ollama list` shows it: "llama3.2:latest", "hf.co/org/repo:Q4_K_M"
    registry: str
    namespace: str
    model: str
    tag: str
    path: Path
    layers: tuple[OllamaLayer, ...]

    @property
    def weights(self) -> tuple[OllamaLayer, ...]:
        return tuple(layer for layer in self.layers if layer.kind == "model")


def default_ollama_model_dirs(home: Path | None = None) -> list[Path]:
    """Where Ollama keeps models: $OLLAMA_MODELS, ~/.ollama/models, and the Linux service
    user's /usr/share/ollama/.ollama/models (those that exist)."""
    candidates: list[Path] = []
    env = os.environ.get("OLLAMA_MODELS")
    if env:
        candidates.append(Path(env))
    candidates.append((home or Path.home()) / ".ollama" / "models")
    candidates.append(Path("/usr/share/ollama/.ollama/models"))
    seen: list[Path] = []
    for c in candidates:
        try:
            if c.is_dir() and c not in seen:
                seen.append(c)
        except OSError:
            continue
    return seen


def display_name(registry: str, namespace: str, model: str, tag: str) -> str:
    if registry == DEFAULT_REGISTRY:
        base = model if namespace == DEFAULT_NAMESPACE else f"{namespace}/{model}"
    else:
        base = f"{registry}/{namespace}/{model}"
    return f"{base}:{tag}"


def read_ollama_manifest(path: Path, models_dir: Path | None = None) -> OllamaManifest | None:
    """The manifest at `models/manifests/<registry>/<namespace>/<model>/<tag>`, or None when the
    file is not one (unreadable, too large, not JSON, no layers)."""
    parts = path.parts
    if len(parts) < 5 or parts[-5] != "manifests":
        return None
    registry, namespace, model, tag = parts[-4:]
    if not all(_PART_RE.fullmatch(p) for p in (registry, namespace, model, tag)):
        return None
    root = models_dir if models_dir is not None else path.parents[4]
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
    except OSError:
        return None
    if len(raw) > MAX_MANIFEST_BYTES:
        return None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("layers"), list):
        return None
    layers: list[OllamaLayer] = []
    for item in doc["layers"][:MAX_LAYERS]:
        if not isinstance(item, dict):
            continue
        media, digest, size = item.get("mediaType"), item.get("digest"), item.get("size", 0)
        if not isinstance(media, str) or not isinstance(digest, str) or not media.startswith(_LAYER_PREFIX):
            continue
        m = _DIGEST_RE.fullmatch(digest)
        if m is None:
            continue
        size = size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else 0
        layers.append(
            OllamaLayer(
                kind=media[len(_LAYER_PREFIX) :],
                digest=f"sha256:{m.group(1)}",
                size=size,
                blob=root / "blobs" / f"sha256-{m.group(1)}",
            )
        )
    if not layers:
        return None
    return OllamaManifest(
        name=display_name(registry, namespace, model, tag),
        registry=registry,
        namespace=namespace,
        model=model,
        tag=tag,
        path=path,
        layers=tuple(layers),
    )


def iter_ollama_manifests(models_dir: Path, max_manifests: int = MAX_MANIFESTS) -> Iterator[OllamaManifest]:
    """Every manifest under `models_dir/manifests` (exactly four levels deep), at most
    `max_manifests` files looked at."""
    looked = 0
    base = models_dir / "manifests"
    for registry in _subdirs(base):
        for namespace in _subdirs(registry):
            for model in _subdirs(namespace):
                try:
                    tags = sorted(os.scandir(model), key=lambda e: e.name)
                except OSError:
                    continue
                for tag in tags:
                    if looked >= max_manifests:
                        return
                    looked += 1
                    if tag.is_file(follow_symlinks=False):
                        manifest = read_ollama_manifest(Path(tag.path), models_dir)
                        if manifest is not None:
                            yield manifest


def ollama_blob_names(models_dir: Path, max_manifests: int = MAX_MANIFESTS) -> dict[Path, list[str]]:
    """Blob path -> the names that use it ("llama3.2:latest"; "name (adapter)" for non-weight
    layers worth reporting). Several tags often share one blob."""
    out: dict[Path, list[str]] = {}
    for manifest in iter_ollama_manifests(models_dir, max_manifests):
        for layer in manifest.layers:
            if layer.kind == "model":
                label = manifest.name
            elif layer.kind in ("adapter", "projector"):
                label = f"{manifest.name} ({layer.kind})"
            else:
                continue
            names = out.setdefault(layer.blob, [])
            if label not in names:
                names.append(label)
    return out


def _subdirs(path: Path, limit: int = MAX_MANIFESTS) -> list[Path]:
    out: list[Path] = []
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                if len(out) >= limit:
                    break
                if entry.is_dir(follow_symlinks=False):
                    out.append(Path(entry.path))
    except OSError:
        return []
    return sorted(out)

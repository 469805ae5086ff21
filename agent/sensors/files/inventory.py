"""The model files the sensor knows: each with its file key, identity, hash and the transfers
waiting for that hash; the set by path, with the known hashes and sizes that copies are matched
against. Shared between the worker and `inventory()`, under one lock."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from agent.observations import ModelFileObservation, ModelTransferObservation, ProcessObservation
from agent.system.hashing import FileKey


@dataclass
class TrackedModel:
    path: str
    key: FileKey
    format: str
    confidence: float
    architecture: str = ""
    parameter_count: int = 0
    quantization: str = ""
    model_name: str = ""
    sha256: str = ""
    hub: str = ""
    owner: str = ""
    origin: str = "inventory"
    writer: ProcessObservation | None = None
    generation: int = 0
    moved_from: str = ""
    transfers: list[ModelTransferObservation] = field(default_factory=list)
    check_disguised_copy: bool = False
    announced: bool = False
    weight_names: int = 0  # arrays named like weights, of `arrays` (NumPy archives)
    arrays: int = 0
    demoted: bool = False  # the significance rule's verdict, with its reasons
    reasons: tuple[str, ...] = ()

    def observation(self) -> ModelFileObservation:
        return ModelFileObservation(
            path=self.path,
            format=self.format,
            size_bytes=self.key[2],
            sha256=self.sha256,
            confidence=self.confidence,
            origin=self.origin,
            architecture=self.architecture,
            parameter_count=self.parameter_count,
            quantization=self.quantization,
            model_name=self.model_name,
            hub=self.hub,
            owner=self.owner,
            writer=self.writer,
            observed_at=time.time(),
            demoted=self.demoted,
            reasons=self.reasons,
        )

    def transfer(
        self,
        kind: str,
        destination_root: str,
        source: str,
        confidence: float,
        reason: str,
    ) -> ModelTransferObservation:
        """These weights arriving at their path from `source` (the hash is filled in once known)."""
        return ModelTransferObservation(
            source_path=source,
            destination=self.path,
            destination_root=destination_root,
            kind=kind,
            sha256="",
            size_bytes=self.key[2],
            format=self.format,
            model_name=self.model_name,
            confidence=confidence,
            reason=reason,
            owner=self.owner,
            process=self.writer,
            observed_at=time.time(),
            demoted=self.demoted,
            reasons=self.reasons,
        )


class Inventory:
    def __init__(self, max_models: int) -> None:
        self._lock = threading.Lock()
        self._max = max_models
        self._models: dict[str, TrackedModel] = {}
        self._by_sha: dict[str, dict[str, None]] = {}  # sha256 -> the paths holding it, oldest first
        self._sizes: dict[int, int] = {}

    def observations(self) -> list[ModelFileObservation]:
        """The model files now, by path (sha256 empty while not yet hashed)."""
        with self._lock:
            return [m.observation() for m in sorted(self._models.values(), key=lambda m: m.path)]

    def models(self) -> list[TrackedModel]:
        with self._lock:
            return list(self._models.values())

    def get(self, path: str) -> TrackedModel | None:
        with self._lock:
            return self._models.get(path)

    def is_current(self, model: TrackedModel) -> bool:
        with self._lock:
            return self._models.get(model.path) is model

    def put(self, model: TrackedModel) -> bool:
        """Track a model at its path (replacing the one there); False when the limit is reached."""
        with self._lock:
            if model.path not in self._models and len(self._models) >= self._max:
                return False
            old = self._models.get(model.path)
            if old is not None and old is not model:
                self._unindex(old)
            self._models[model.path] = model
            if len(self._sizes) >= 4 * self._max:
                self._sizes.clear()
            self._sizes[model.key[2]] = self._sizes.get(model.key[2], 0) + 1
            return True

    def put_package(self, model: TrackedModel) -> None:
        """A package (a folder): never hashed nor matched by size."""
        with self._lock:
            if len(self._models) < self._max:
                self._models[model.path] = model

    def forget(self, path: str) -> None:
        with self._lock:
            self._forget(path)

    def forget_under(self, directory: str) -> None:
        """Drop the models below `directory` (an unmounted medium)."""
        with self._lock:
            for path in [p for p in self._models if p.startswith(directory.rstrip("/") + "/")]:
                self._forget(path)

    def forget_stale(self, generation: int) -> None:
        """Drop the models a scan of `generation` did not see and that are gone."""
        with self._lock:
            stale = [
                p for p, m in self._models.items() if m.generation < generation and not os.path.exists(p)
            ]
            for path in stale:
                self._forget(path)

    def folders(self) -> set[str]:
        with self._lock:
            return {os.path.dirname(p) for p in self._models}

    def size_known(self, size: int) -> bool:
        return size in self._sizes

    def claim_hash(self, sha: str, path: str) -> str | None:
        """Record that `path` holds `sha`; another existing path that holds it already, if any."""
        with self._lock:
            paths = self._by_sha.setdefault(sha, {})
            other = next((p for p in paths if p != path and os.path.exists(p)), None)
            paths[path] = None
            return other

    def with_hash(self, sha: str) -> TrackedModel | None:
        found = self.copies(sha)
        return found[0] if found else None

    def copies(self, sha: str) -> list[TrackedModel]:
        """The known models whose bytes have this SHA-256, oldest known first."""
        with self._lock:
            paths = self._by_sha.get(sha, {})
            found = [self._models.get(p) for p in paths]
            return [m for m in found if m is not None and m.sha256 == sha]

    def known_paths(self, paths: Iterable[str]) -> tuple[str, ...]:
        """Those of `paths` that are model files here."""
        with self._lock:
            return tuple(p for p in paths if p in self._models)

    def same_file(self, key: FileKey, path: str) -> TrackedModel | None:
        """A known model at another path that is the same file (device and inode): a hard link."""
        with self._lock:
            return next((m for m in self._models.values() if m.key[:2] == key[:2] and m.path != path), None)

    def _forget(self, path: str) -> None:
        model = self._models.pop(path, None)
        if model is not None:
            self._unindex(model)

    def _unindex(self, model: TrackedModel) -> None:
        paths = self._by_sha.get(model.sha256)
        if paths is not None:
            paths.pop(model.path, None)
            if not paths:
                del self._by_sha[model.sha256]

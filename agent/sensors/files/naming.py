"""Names for what the file sensor finds: the hub a model came from (its place in a Hugging Face
or publisher cache, an Ollama manifest, or a recent download hint from the network sensor), its
Ollama name, and its owner's user name."""

from __future__ import annotations

import collections
import os
import pwd
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent.modelfiles.ollama import iter_ollama_manifests
from agent.observations import ProcessObservation
from agent.sensors.files.roots import Root

HINT_WINDOW_S: Final = 600.0


@dataclass(frozen=True)
class HubHint:
    """The network sensor saw `pid` receive `bytes` from model hub `host` at `at` (epoch seconds)."""

    host: str
    bytes: int
    pid: int
    at: float


class HubHints:
    """Recent transfers from model hubs, told by the network sensor (any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hints: collections.deque[HubHint] = collections.deque(maxlen=64)

    def add(self, hint: HubHint) -> None:
        with self._lock:
            self._hints.append(hint)

    def pids(self) -> list[int]:
        with self._lock:
            return [h.pid for h in self._hints if h.pid > 0]

    def host_for(self, writer: ProcessObservation | None, size: int) -> str:
        """The hub the writer received from lately, else one that sent about `size` bytes."""
        now = time.time()
        with self._lock:
            hints = [h for h in self._hints if now - h.at <= HINT_WINDOW_S]
        for hint in reversed(hints):
            if writer is not None and hint.pid == writer.pid:
                return hint.host
        for hint in reversed(hints):
            if size and hint.bytes >= size * 0.9:
                return hint.host
        return ""


# A Hugging Face hub cache names a repository's folder models--ORG--NAME (datasets--, spaces--).
_HF_REPO: Final = re.compile(r"(models|datasets|spaces)--(.+)")


class Namer:
    """Hub, Ollama and owner names, with small caches (the worker's thread only)."""

    def __init__(self, hints: HubHints) -> None:
        self._hints = hints
        self._ollama_names: dict[str, tuple[float, dict[str, str]]] = {}
        self._owners: dict[int, str] = {}

    def owner(self, uid: int) -> str:
        name = self._owners.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            if len(self._owners) < 1024:
                self._owners[uid] = name
        return name

    def hub(self, path: str, root: Root, writer: ProcessObservation | None) -> str:
        rel = path[len(root.path) + 1 :].split("/")
        if root.layout == "huggingface":
            for part in rel:
                m = _HF_REPO.fullmatch(part)
                if m:
                    repo = "/".join(m.group(2).split("--"))
                    prefix = "" if m.group(1) == "models" else m.group(1) + "/"
                    return f"huggingface.co/{prefix}{repo}"
        elif root.layout == "ollama":
            name = self.ollama_name(root.path, path, full=True)
            if name:
                return name
        elif root.layout == "publisher_repo" and len(rel) >= 3:
            return f"{root.hub}/{rel[0]}/{rel[1]}"
        hinted = self._hints.host_for(writer, os.path.getsize(path) if os.path.exists(path) else 0)
        return hinted or root.hub

    def ollama_name(self, models_dir: str, blob: str, *, full: bool) -> str:
        """The model a blob of an Ollama store belongs to: registry/namespace/model:tag when
        `full`, else its short name."""
        cached = self._ollama_names.get(models_dir)
        if cached is None or time.monotonic() - cached[0] > 30:
            names: dict[str, str] = {}
            for manifest in iter_ollama_manifests(Path(models_dir), 2000):
                for layer in manifest.weights:
                    full_name = f"{manifest.registry}/{manifest.namespace}/{manifest.model}:{manifest.tag}"
                    names.setdefault(str(layer.blob), full_name)
                    names.setdefault("short:" + str(layer.blob), manifest.name)
            cached = self._ollama_names[models_dir] = (time.monotonic(), names)
        return cached[1].get(blob if full else "short:" + blob, "")

"""Fine-tuning artifacts on disk (adapters, `checkpoint-N/`, trainer and optimizer state): which
names are worth a look, and each artifact reported once (again when its writer is found)."""

from __future__ import annotations

import collections
import os
import re
import time
from collections.abc import Callable
from typing import Final

from agent.modelfiles import classify_training_artifact
from agent.observations import ProcessObservation, TrainingArtifactObservation

_TRAINING_NAME: Final = re.compile(
    r"adapter_model\.(?:safetensors|bin)|adapter_config\.json|trainer_state\.json|optimizer\.(?:pt|bin)"
    r"|scheduler\.pt|training_args\.bin|rng_state(?:_\d+)?\.pth|.*optim_states\.pt"
)
_TRAINING_DIR: Final = re.compile(r"checkpoint-\d+|global_step\d+")
MAX_REMEMBERED: Final = 4096


def training_file_name(name: str) -> bool:
    return _TRAINING_NAME.fullmatch(name) is not None


def training_dir_name(name: str) -> bool:
    return _TRAINING_DIR.fullmatch(name) is not None


class TrainingArtifacts:
    """Classifies candidate paths (agent.modelfiles.training reads them, bounded) into observations."""

    def __init__(self, owner: Callable[[int], str]) -> None:
        self._owner = owner
        self._seen: collections.OrderedDict[str, str] = collections.OrderedDict()

    def note(self, path: str, writer: ProcessObservation | None) -> TrainingArtifactObservation | None:
        if path in self._seen and writer is None:
            return None
        label = classify_training_artifact(path)
        if label is None:
            return None
        self._seen[path] = label
        while len(self._seen) > MAX_REMEMBERED:
            self._seen.popitem(last=False)
        try:
            owner = self._owner(os.lstat(path).st_uid)
        except OSError:
            owner = ""
        return TrainingArtifactObservation(path, label, owner, writer, time.time())

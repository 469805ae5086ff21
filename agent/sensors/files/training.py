"""Fine-tuning artifacts on disk (adapters, `checkpoint-N/`, trainer and optimizer state), each
reported once (again when its writer is found). Which names are worth a look is the catalog's
(agent/catalog/training.toml: `is_training_file`, `is_training_dir`)."""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable
from typing import Final

from agent.modelfiles import classify_training_artifact
from agent.observations import ProcessObservation, TrainingArtifactObservation

MAX_REMEMBERED: Final = 4096


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

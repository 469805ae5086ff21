"""What the walk and the change events hand files to: the worker's judging of a file."""

from __future__ import annotations

import os
from typing import Protocol

from agent.observations import ProcessObservation
from agent.sensors.files.inventory import TrackedModel


class Examiner(Protocol):
    def consider(
        self, path: str, st: os.stat_result, origin: str, writer: ProcessObservation | None, moved_from: str
    ) -> None:
        """A regular file: found by a scan (origin "inventory"), or new ("new") or moved in."""

    def settled(
        self, path: str, st: os.stat_result, writer: ProcessObservation | None, moved_from: str
    ) -> None:
        """A regular file quiet (or closed) after a change: considered as new, within the files budget."""

    def consider_package(self, path: str, st: os.stat_result) -> None:
        """A folder that may be a model (a Core ML package)."""

    def adopt_moved(self, model: TrackedModel) -> None:
        """A known model renamed in place (same inode), with its new path."""

    def training(self, path: str, writer: ProcessObservation | None) -> None:
        """A path named like a fine-tuning artifact."""

"""The file sensor as the pipeline sees it: options, start/stop, poll, status, the policy's
watched paths, the inventory and the network sensor's hub hints. The work is the worker's."""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agent.catalog.locations import LocationCatalog
from agent.observations import (
    ModelFileObservation,
    ModelTransferObservation,
    Observation,
    TrainingArtifactObservation,
)
from agent.sensors.base import Sensor, SensorCapabilities, SensorState, SensorStatus
from agent.sensors.files.naming import HubHint, HubHints
from agent.sensors.files.significance import ModelRule
from agent.sensors.files.walk import SKIP_DIR_NAMES
from agent.sensors.files.watch import WATCHDOG
from agent.sensors.files.worker import Budgets, Limits, Places, Settings, Worker

if TYPE_CHECKING:
    from agent.policy.rules import Policy


class FileSensor(Sensor):
    name = "files"
    capabilities = SensorCapabilities(needs_root=True, platforms=("Linux", "Darwin", "Windows"))
    produces = (ModelFileObservation, ModelTransferObservation, TrainingArtifactObservation)

    def __init__(
        self,
        *,
        state_path: Path | None,
        homes: Sequence[str] | None = None,
        paths: Sequence[str] = (),
        default_roots: bool = True,
        scan_homes: bool = True,
        media_prefixes: Sequence[str] | None = None,
        sync_folders: Sequence[str] = (),
        files_per_second: float = 2000.0,
        read_bytes_per_second: float = 8 * 2**20,
        hash_bytes_per_second: float = 64 * 2**20,
        cpu_percent: float = 2.0,
        settle_seconds: float = 2.0,
        rescan_interval: float = 86400.0,
        max_tracked_files: int = 200_000,
        max_queued_events: int = 10_000,
        max_models: int = 10_000,
        max_watches: int = 64,
        skip_dir_names: Sequence[str] = SKIP_DIR_NAMES,
        low_priority: bool = True,
        find_writers: bool = True,
        catalog: LocationCatalog | None = None,
        model_rule: ModelRule | None = None,
    ) -> None:
        places = Places(
            homes=homes,
            paths=tuple(paths),
            default_roots=default_roots,
            scan_homes=scan_homes,
            media_prefixes=media_prefixes,
            sync_folders=tuple(sync_folders),
        )
        settings = Settings(
            state_path=state_path,
            places=places,
            settle_seconds=settle_seconds,
            rescan_interval=rescan_interval,
            budgets=Budgets(files_per_second, read_bytes_per_second, hash_bytes_per_second, cpu_percent),
            skip_dir_names=frozenset(skip_dir_names),
            low_priority=low_priority,
            find_writers=find_writers,
            model_rule=model_rule or ModelRule(),
            limits=Limits(
                max_tracked_files=max_tracked_files,
                max_queued_events=max_queued_events,
                max_models=max_models,
                max_watches=max_watches,
            ),
        )
        self._hints = HubHints()
        self._worker = Worker(settings, catalog, self._hints)
        self.first_scan_done = self._worker.first_scan_done
        self._thread: threading.Thread | None = None

    @property
    def hashed_bytes(self) -> int:
        """Read for hashing since start (a restart with the cache hashes nothing)."""
        return self._worker.hashed_bytes

    # --- Sensor interface --------------------------------------------------------------------

    def status(self) -> SensorStatus:
        system = platform.system()
        if system not in self.capabilities.platforms:
            return SensorStatus(self.name, SensorState.INACTIVE, f"unsupported platform {system}")
        reasons = []
        if not WATCHDOG:
            reasons.append("watchdog not installed: inventory by periodic scan only, no change events")
        reasons.extend(v for _, v in sorted(self._worker.problems.items()))
        paused = [
            w
            for w, on in (("hashing", self._worker.shed_hashing), ("inventory walk", self._worker.shed_walk))
            if on
        ]
        if paused:
            reasons.append(f"{' and '.join(paused)} paused by the agent's watchdog")
        dropped = self._worker.events.dropped
        if dropped:
            reasons.append(f"{dropped} file events dropped (queue full)")
        if reasons:
            return SensorStatus(self.name, SensorState.DEGRADED, "; ".join(reasons))
        return SensorStatus(self.name, SensorState.ACTIVE)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._worker.stopping.clear()
        self._thread = threading.Thread(target=self._worker.run, name="umbra-files", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._worker.stopping.set()
        self._worker.wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def poll(self) -> Sequence[Observation]:
        return self._worker.outbox.take()

    def apply_policy(self, policy: Policy) -> None:
        """The policy's watched paths join the roots: watched and scanned at once, dropped with it."""
        self._worker.set_policy_paths(tuple(dict.fromkeys(policy.watched_paths)))

    # --- what the daemon and the other sensors ask -----------------------------------------------

    #: The work the agent's watchdog may shed here, costliest first (agent/watchdog.py).
    SHEDDABLE = ("hashing", "inventory walk")

    def shed(self, work: frozenset[str]) -> None:
        """Pause the named work (hashing, the inventory walk) until it is no longer named; change
        events are still followed. Paused work is delayed, not lost."""
        self._worker.shed_hashing = "hashing" in work
        self._worker.shed_walk = "inventory walk" in work
        self._worker.wake.set()

    def inventory(self) -> list[ModelFileObservation]:
        """The model files on this host now (sha256 empty while not yet hashed), by path."""
        return self._worker.inventory.observations()

    def note_hub_transfer(self, host: str, nbytes: int, pid: int, at: float | None = None) -> None:
        """A hint from the network sensor: `pid` received `nbytes` from model hub `host`. A model
        file written by that process (or about that large) soon after is attributed to the hub."""
        self._hints.add(HubHint(host, nbytes, pid, time.time() if at is None else at))

    def watched(self) -> list[str]:
        """The paths watched for changes now (by their own watch or a recursive one above)."""
        return self._worker.watches.paths()

    def scheduled_watches(self) -> list[str]:
        """The watches handed to watchdog: never one inside another, recursive, one."""
        return self._worker.watches.scheduled()

"""The file sensor's worker: one thread, at low CPU and I/O priority, that walks the roots,
follows change events, judges each file by its content and hashes models, within three budgets
(files stat'ed, header bytes read and bytes hashed per second); what it finds goes to a bounded
outbox that the sensor's poll() empties."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

from agent.catalog.locations import LocationCatalog, default_location_catalog
from agent.catalog.training import is_training_dir, is_training_file
from agent.modelfiles import identify_file
from agent.modelfiles.identify import HARD_MIN_BYTES
from agent.observations import ModelTransferObservation, Observation, ProcessObservation
from agent.sensors.files.archives import PackedMember, archive_kind, examine_archive, packed_transfer
from agent.sensors.files.changes import Changes
from agent.sensors.files.handover import Handover
from agent.sensors.files.hash_queue import HashQueue, HashTask
from agent.sensors.files.inventory import Inventory, TrackedModel
from agent.sensors.files.members import member_hash_job, worth_identifying
from agent.sensors.files.naming import HubHints, Namer
from agent.sensors.files.renames import disguised, innocent_suffix
from agent.sensors.files.roots import (
    DESTINATION_KINDS,
    DOWNLOAD_KINDS,
    Root,
    find_homes,
    norm,
    place,
    removable_roots,
    resolve_roots,
    scan_plan,
)
from agent.sensors.files.significance import ModelRule, array_counts, judge
from agent.sensors.files.training import TrainingArtifacts
from agent.sensors.files.walk import Walker
from agent.sensors.files.watch import EventQueue, Watches
from agent.system import procfs
from agent.system.filehead import peek
from agent.system.hashing import (
    FileKey,
    FileStateStore,
    HashJob,
    SeenSet,
    TokenBucket,
    file_key,
    fingerprint,
)
from agent.system.hashing import lower_thread_priority as _lower_priority
from agent.system.mounts import MountWatcher

log = logging.getLogger(__name__)

_LINUX = platform.system() == "Linux"
MAX_OUT: Final = 4096


@dataclass(frozen=True)
class Places:
    """Where to look, besides the catalog's model locations (see FileSensor)."""

    homes: Sequence[str] | None
    paths: tuple[str, ...]
    default_roots: bool
    scan_homes: bool
    media_prefixes: Sequence[str] | None
    sync_folders: tuple[str, ...]


@dataclass(frozen=True)
class Budgets:
    """The worker's rates: files stat'ed, header bytes read, bytes hashed (per second), and the
    share of one core its thread may use (the first inventory of a large home takes longer instead
    of costing more: the agent's cost goal is 5 % of a core for the whole daemon)."""

    files_per_second: float
    read_bytes_per_second: float
    hash_bytes_per_second: float
    cpu_percent: float = 2.0


@dataclass(frozen=True)
class Limits:
    """What the sensor holds at most: judged files, queued events, models, watches."""

    max_tracked_files: int
    max_queued_events: int
    max_models: int
    max_watches: int


@dataclass(frozen=True)
class Settings:
    state_path: Path | None
    places: Places
    budgets: Budgets
    limits: Limits
    settle_seconds: float
    rescan_interval: float
    skip_dir_names: frozenset[str]
    low_priority: bool
    find_writers: bool
    model_rule: ModelRule = field(default_factory=ModelRule)


def _byte_bucket(rate: float) -> TokenBucket:
    return TokenBucket(rate, burst=max(rate / 10, 1 << 20))


class Worker:
    def __init__(self, settings: Settings, catalog: LocationCatalog | None, hints: HubHints) -> None:
        self.settings = settings
        self._catalog = catalog
        self.hints = hints
        self._find_writers = settings.find_writers and _LINUX
        self.problems: dict[str, str] = {}
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.first_scan_done = threading.Event()
        self.events = EventQueue(settings.limits.max_queued_events, self.wake)
        self.outbox: Handover[Observation] = Handover(MAX_OUT)  # to poll()
        self.inventory = Inventory(settings.limits.max_models)
        self.watches = Watches(self.events, settings.limits.max_watches, self.problems)
        self.hashed_bytes = 0  # read for hashing since start (a restart with the cache hashes nothing)
        # Work the agent's watchdog has shed (agent/watchdog.py): paused, not dropped; set from the
        # daemon's thread, read here once a loop.
        self.shed_hashing = False
        self.shed_walk = False
        self._lock = threading.Lock()  # the policy's paths, set from the pipeline's thread
        self._policy_paths: tuple[str, ...] = ()  # watched_paths of the policy in force
        self._roots_changed = False

    def set_policy_paths(self, paths: tuple[str, ...]) -> None:
        with self._lock:
            if paths == self._policy_paths:
                return
            self._policy_paths = paths
            self._roots_changed = True
        self.wake.set()

    def run(self) -> None:
        try:
            self._setup()
            while not self.stopping.is_set():
                self._loop_once()
        except Exception as exc:  # a bug must not kill the agent; status says it
            log.exception("file sensor worker failed")
            self.problems["worker"] = f"worker stopped: {type(exc).__name__}: {exc}"
        finally:
            self._teardown()

    def _setup(self) -> None:
        s = self.settings
        if s.low_priority:
            for problem in _lower_priority():
                log.debug("file sensor: %s", problem)
        self._store: FileStateStore | None = None
        if s.state_path is not None:
            try:
                self._store = FileStateStore(s.state_path, max_hashes=max(s.limits.max_models * 4, 1000))
            except Exception as exc:  # sqlite3.Error, OSError
                self.problems["store"] = f"hash cache not kept ({exc}): hashes are recomputed after a restart"
        self._seen = SeenSet(s.limits.max_tracked_files, self._store.load_seen() if self._store else b"")
        budgets = s.budgets
        self._files_bucket = TokenBucket(
            budgets.files_per_second, burst=max(budgets.files_per_second / 10, 64)
        )
        self._read_bucket = _byte_bucket(budgets.read_bytes_per_second)
        # CPU seconds per second for this thread; a burst of a tenth of a second at most.
        share = budgets.cpu_percent / 100
        self._cpu_bucket = TokenBucket(share, burst=max(share * 2, 0.05))
        self._cpu_mark = time.thread_time()
        self._hashes = HashQueue(_byte_bucket(budgets.hash_bytes_per_second), self._store)
        self._namer = Namer(self.hints)
        self._training_artifacts = TrainingArtifacts(self._namer.owner)
        self._walker = Walker(s.skip_dir_names, (self._files_bucket, self._read_bucket), self)
        self._changes = Changes(
            self.events,
            self.inventory,
            self.hints,
            self,
            settle_seconds=s.settle_seconds,
            find_writers=self._find_writers,
        )
        self._generation = 0
        self._scanning = False  # a planned scan is under way (not only a medium's walk)
        self._next_scan = 0.0
        self._next_settle = 0.0
        self._seen_saved_at = time.monotonic()
        self._seen_dirty = 0
        self._mounts = MountWatcher()
        self._media_prefixes = tuple(
            norm(p)
            for p in (
                s.places.media_prefixes
                if s.places.media_prefixes is not None
                else self._catalog_().media_prefixes
            )
        )
        self._removable: dict[str, Root] = {}
        self._roots = self._resolve_roots()
        self._walker.set_root_paths(self._roots)
        self.watches.start()
        for root in self._roots:
            if root.watch:
                self.watches.watch(root.path, recursive=root.recursive)
        self._refresh_mounts()

    def _teardown(self) -> None:
        self.watches.stop()
        mounts = getattr(self, "_mounts", None)
        if mounts is not None:
            mounts.close()
        hashes = getattr(self, "_hashes", None)
        if hashes is not None:
            hashes.close()
        store = getattr(self, "_store", None)
        if store is not None:
            with contextlib.suppress(Exception):
                store.save_seen(self._seen.to_bytes())
            store.close()

    def _loop_once(self) -> None:
        now = time.monotonic()
        if self._roots_changed:
            self._reroot()
        self._changes.drain()
        if self._mounts.changed():
            self._refresh_mounts()
        if now >= self._next_settle:
            self._changes.settle_due(now)
            self._next_settle = now + 0.1
        spent = time.thread_time()
        self._cpu_bucket.take(spent - self._cpu_mark)
        self._cpu_mark = spent
        in_budget = self._cpu_bucket.wait_time() <= 0
        hashed = in_budget and not self.shed_hashing and self._hash_step()
        progress, finished = self._walker.step() if in_budget and not self.shed_walk else (False, False)
        if finished and self._scanning:
            self._finish_scan()
        if not self._walker.busy and now >= self._next_scan:
            self._plan_scan()
            return
        if self._seen_dirty and (now - self._seen_saved_at > 60 or self.first_scan_done.is_set()):
            self._save_seen()
        if hashed or progress:
            return  # progress: go on (the steps themselves stop when a budget is spent)
        waits = []
        if not in_budget:
            # Out of CPU share, neither walk nor hash may go on: sleep until half the burst is
            # back, not merely out of debt. Each wake-up costs the loop's own checks, and waking
            # at every token spent the share on them alone (a 100,000-file home was walked at
            # about 60 files a second, its first inventory over half an hour).
            waits.append(self._cpu_bucket.wait_time(self._cpu_bucket.burst / 2))
        else:
            if self._hashes.busy and not self.shed_hashing:
                waits.append(self._hashes.wait_time())
            if self._walker.busy and not self.shed_walk:
                waits.append(self._walker.wait_time())
        wait = min([w for w in waits if w > 0] or [1.0])
        if self._changes:
            wait = min(wait, 0.1)
        self.wake.wait(wait)
        self.wake.clear()

    def _save_seen(self) -> None:
        if self._store is not None:
            try:
                self._store.save_seen(self._seen.to_bytes())
            except Exception as exc:
                self.problems["store"] = f"hash cache not kept: {exc}"
        self._seen_saved_at = time.monotonic()
        self._seen_dirty = 0

    # --- roots, watches and mounts -------------------------------------------------------------

    def _catalog_(self) -> LocationCatalog:
        if self._catalog is None:
            self._catalog = default_location_catalog()
        return self._catalog

    def _resolve_roots(self) -> list[Root]:
        s = self.settings
        with self._lock:
            pushed = self._policy_paths
        return resolve_roots(
            self._catalog_(),
            find_homes(s.places.homes),
            default_roots=s.places.default_roots,
            sync_folders=s.places.sync_folders,
            paths=s.places.paths,
            policy_paths=pushed,
            scan_homes=s.places.scan_homes,
        )

    def _reroot(self) -> None:
        """The roots changed (a pushed policy): watch and scan the new ones now, unwatch the gone."""
        with self._lock:
            self._roots_changed = False
        before = {r.path: r for r in self._roots}
        self._roots = self._resolve_roots()
        self._walker.set_root_paths(self._roots)
        after = {r.path: r for r in self._roots}
        for path in before.keys() - after.keys():
            self.watches.unwatch(path)
        for path in sorted(after.keys() - before.keys()):
            root = after[path]
            if root.watch:
                self.watches.watch(path, recursive=root.recursive)
            if root.scan:
                self._walker.add(root)
        if after.keys() != before.keys():
            log.info("file sensor roots: %d (%s)", len(after), ", ".join(sorted(after)))

    def _refresh_mounts(self) -> None:
        """Removable media as it comes and goes: a new mount is watched (copies onto it are
        exfiltration) and walked once (the models it brought are inventoried); the models of
        a gone one are forgotten."""
        current = removable_roots(self._mounts.read(), self._media_prefixes)
        for gone in set(self._removable) - set(current):
            self.watches.unwatch(gone)
            self.inventory.forget_under(gone)
        for new in sorted(set(current) - set(self._removable)):
            self.watches.watch(new, recursive=True)
            self._walker.add(current[new])
            log.info("removable media mounted at %s: inventoried", new)
        self._removable = current

    def _place(self, path: str) -> Root | None:
        return place(path, (*self._removable.values(), *self._roots))

    # --- scans ---------------------------------------------------------------------------------

    def _plan_scan(self) -> None:
        self._scanning = True
        self._generation += 1
        if self._generation > 1:
            self._roots = self._resolve_roots()
        self._walker.plan(scan_plan(self._roots), self._roots)
        self._next_scan = time.monotonic() + self.settings.rescan_interval

    def _finish_scan(self) -> None:
        self._scanning = False
        self.inventory.forget_stale(self._generation)
        self._save_seen()
        if not self.first_scan_done.is_set():
            log.info("file sensor: first inventory done: %d model files", len(self.inventory.models()))
        self.first_scan_done.set()
        # Folders of models, watched (not recursively) for renames; one inside a recursive watch
        # gets no watch of its own (Watches never nests them).
        for folder in sorted(self.inventory.folders()):
            self.watches.watch(folder, recursive=False)

    # --- judging one file ----------------------------------------------------------------------

    def consider(
        self, path: str, st: os.stat_result, origin: str, writer: ProcessObservation | None, moved_from: str
    ) -> None:
        name = os.path.basename(path)
        if is_training_file(name):
            self.training(path, writer)
            parent = os.path.dirname(path)
            if is_training_dir(os.path.basename(parent)):
                self.training(parent, writer)
        if st.st_size < HARD_MIN_BYTES:
            return
        key = file_key(st)
        fp = fingerprint(key)
        existing = self.inventory.get(path)
        if existing is not None and existing.key == key:
            existing.generation = self._generation
            return
        if fp in self._seen and origin == "inventory":
            return
        head = peek(path, 16)
        self._read_bucket.take(len(head) or 1)
        root = self._place(path) if origin != "inventory" else None
        if not worth_identifying(head, name):
            if origin != "inventory":
                self._not_a_model(path, st, head, root, writer)
            self._remember_judged(fp)
            return
        ident = identify_file(path)
        self._read_bucket.take(ident.bytes_read)
        if not ident.is_model or ident.info is None:
            if origin != "inventory":
                self._not_a_model(path, st, head, root, writer)
            self._remember_judged(fp)
            return
        info = ident.info
        weight_names, arrays = array_counts(info.extra)
        model = TrackedModel(
            path=path,
            key=key,
            format=info.format,
            confidence=ident.confidence,
            architecture=info.architecture or "",
            parameter_count=info.parameter_count or 0,
            quantization=info.quantization or "",
            model_name=info.model_name or "",
            owner=self._namer.owner(st.st_uid),
            origin=origin,
            writer=writer,
            generation=self._generation,
            moved_from=moved_from,
            weight_names=weight_names,
            arrays=arrays,
        )
        self._adopt(model, root)

    def settled(
        self, path: str, st: os.stat_result, writer: ProcessObservation | None, moved_from: str
    ) -> None:
        self._files_bucket.take(1)
        self.consider(path, st, "new", writer, moved_from)

    def adopt_moved(self, model: TrackedModel) -> None:
        self._adopt(model, self._place(model.path))

    def consider_package(self, path: str, st: os.stat_result) -> None:
        ident = identify_file(path)
        self._read_bucket.take(ident.bytes_read)
        if ident.is_model and ident.info is not None:
            key = (st.st_dev, st.st_ino, ident.info.size_bytes, st.st_mtime_ns)
            model = TrackedModel(
                path,
                key,
                ident.info.format,
                ident.confidence,
                ident.info.architecture or "",
                model_name=ident.info.model_name or "",
                owner=self._namer.owner(st.st_uid),
                generation=self._generation,
                sha256="",
            )
            self._judge(model, self._place(path))
            if model.demoted and not self.settings.model_rule.report_demoted:
                return
            self.inventory.put_package(model)
            model.announced = True
            self.outbox.put(model.observation())  # a package has no single hash

    def _remember_judged(self, fp: int) -> None:
        self._seen.add(fp)
        self._seen_dirty += 1

    def _adopt(self, model: TrackedModel, root: Root | None) -> None:
        """A model file found or changed: record it, plan what to report once it is hashed."""
        root = root or self._place(model.path)
        self._judge(model, root)
        if model.demoted and not self.settings.model_rule.report_demoted:
            self._remember_judged(fingerprint(model.key))
            return
        model.hub = self._namer.hub(model.path, root, model.writer) if root is not None else ""
        if not model.model_name and root is not None and root.layout == "ollama":
            model.model_name = self._namer.ollama_name(root.path, model.path, full=False)
        if model.origin != "inventory" and root is not None:
            if root.kind in DOWNLOAD_KINDS and model.origin == "new":
                model.origin = "download"
            elif root.kind in DESTINATION_KINDS:
                model.transfers.append(
                    model.transfer(root.kind, root.path, "", 0.95, f"model copied to {root.name}")
                )
        if model.moved_from and disguised(model.moved_from, model.path, model.format):
            renamed = model.transfer(
                "rename",
                model.path,
                model.moved_from,
                0.9,
                f"renamed from {os.path.basename(model.moved_from)}",
            )
            model.transfers.append(replace(renamed, source_known_by="inode"))  # a move: the same file
        elif model.origin == "new" and not model.transfers and innocent_suffix(model.path):
            model.check_disguised_copy = True
        if not self.inventory.put(model):
            self.problems["models"] = (
                f"more than {self.settings.limits.max_models} model files: the rest are not tracked"
            )
            return
        sha = model.sha256 or (self._store.get_hash(model.key) if self._store is not None else "")
        if sha:
            self._hashed(model, sha)
        else:
            self._hashes.add(
                HashTask(HashJob(model.path, model.key), model), urgent=model.origin != "inventory"
            )

    def _judge(self, model: TrackedModel, root: Root | None) -> None:
        verdict = judge(
            self.settings.model_rule,
            model.path,
            model.format,
            model.key[2],
            model.parameter_count,
            weight_names=model.weight_names,
            arrays=model.arrays,
            location_kind=root.kind if root is not None else "",
        )
        model.demoted, model.reasons = not verdict.counts, verdict.reasons

    def _not_a_model(
        self,
        path: str,
        st: os.stat_result,
        head: bytes,
        root: Root | None,
        writer: ProcessObservation | None,
    ) -> None:
        """A new file that is not weights by content: an archive of one, or a copy of a known model's
        bytes at a destination (same size: worth hashing)."""
        if archive_kind(head, path):
            verdict = examine_archive(
                path,
                st.st_size,
                self._namer.owner(st.st_uid),
                writer,
                self._reading(writer),
                self.inventory.models(),
            )
            self._read_bucket.take(verdict.bytes_read)
            for transfer in verdict.unverified:
                if not (transfer.demoted and not self.settings.model_rule.report_demoted):
                    self.outbox.put(transfer)
            for packed in verdict.to_hash:  # a size match orders the work: its hash decides
                job = member_hash_job(path, file_key(st), packed.member)
                self._hashes.add(HashTask(job, None, None, writer, packed), urgent=True)
            return
        if root is not None and root.kind in DESTINATION_KINDS and self.inventory.size_known(st.st_size):
            self._hashes.add(HashTask(HashJob(path, file_key(st)), None, root, writer), urgent=True)

    def training(self, path: str, writer: ProcessObservation | None) -> None:
        obs = self._training_artifacts.note(path, writer)
        if obs is not None:
            self.outbox.put(obs)

    # --- hashes --------------------------------------------------------------------------------

    def _hash_step(self) -> bool:
        stepped = self._hashes.step()
        if stepped is None:
            return False
        n, task = stepped
        self.hashed_bytes += n
        if task is not None and task.packed is not None:
            self._packed_hashed(task.packed, task.job.sha256, task.job.error)
            return True
        if task is None or not task.job.sha256:
            return True
        if task.model is not None:
            if self.inventory.is_current(task.model):
                self._hashed(task.model, task.job.sha256)
        elif task.place is not None:
            self._copy_by_hash(task, task.job.sha256)
        return True

    def _packed_hashed(self, packed: PackedMember, sha: str, error: str) -> None:
        known = self.inventory.copies(sha) if sha else []
        transfer = packed_transfer(
            packed, sha, error, known, self._reading(packed.writer), self.settings.model_rule
        )
        if transfer is not None and not (transfer.demoted and not self.settings.model_rule.report_demoted):
            self.outbox.put(transfer)

    def _reading(self, writer: ProcessObservation | None) -> frozenset[str]:
        """The known models the writer of a file was seen reading, then or now."""
        if writer is None:
            return frozenset()
        now = procfs.open_files(writer.pid)[0] if self._find_writers else ()
        return frozenset(writer.model_files) | frozenset(self.inventory.known_paths(now))

    def _source(
        self, sha: str, path: str, key: FileKey, writer: ProcessObservation | None
    ) -> tuple[str, str]:
        """Where a copy came from, only when known: the same file (a hard link), or a model with
        its hash that its writer had open; ("", "") otherwise, whatever other copies exist."""
        same = self.inventory.same_file(key, path)
        if same is not None:
            return same.path, "inode"
        reading = self._reading(writer)
        for model in self.inventory.copies(sha):
            if model.path != path and model.path in reading:
                return model.path, "writer"
        return "", ""

    def _hashed(self, model: TrackedModel, sha: str) -> None:
        model.sha256 = sha
        other = self.inventory.claim_hash(sha, model.path)
        if model.check_disguised_copy and other is not None:
            model.transfers.append(
                model.transfer(
                    "rename",
                    model.path,
                    "",  # the same bytes as `other`, but not known to be copied from it
                    0.85,
                    f"the SHA-256 of {other}, under an innocent name",
                )
            )
        self.outbox.put(model.observation())
        for transfer in model.transfers:
            if transfer.source_path:  # a rename: the same file
                self.outbox.put(replace(transfer, sha256=sha))
                continue
            source, known_by = self._source(sha, model.path, model.key, model.writer)
            self.outbox.put(replace(transfer, sha256=sha, source_path=source, source_known_by=known_by))
        model.transfers.clear()
        model.announced = True

    def _copy_by_hash(self, task: HashTask, sha: str) -> None:
        """A file at a destination whose content did not say weights, but whose hash is a known model's."""
        copies = [m for m in self.inventory.copies(sha) if m.path != task.job.path]
        if not copies or task.place is None:
            return
        like = copies[0]
        same = like.path if len(copies) == 1 else f"{len(copies)} known model files"
        source, known_by = self._source(sha, task.job.path, task.job.key, task.writer)
        self.outbox.put(
            ModelTransferObservation(
                source_path=source,
                destination=task.job.path,
                destination_root=task.place.path,
                kind=task.place.kind,
                sha256=sha,
                size_bytes=task.job.key[2],
                format=like.format,
                model_name=like.model_name,
                confidence=0.95,
                reason=f"the SHA-256 of {same}, copied to {task.place.name}",
                owner=like.owner,
                process=task.writer,
                observed_at=time.time(),
                demoted=like.demoted,
                reasons=like.reasons,
                identified_by="hash",
                source_known_by=known_by,
            )
        )

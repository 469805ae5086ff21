"""File sensor: model weights on disk (inventory), arriving (downloads) and leaving (exfiltration).

One background worker thread does all the file work, at low CPU and I/O priority, within three
budgets: files stat'ed per second, header bytes read per second, bytes hashed per second.

- **Inventory.** A first scan walks the roots: the catalog's model locations
  (`agent/catalog/model_locations.toml`: Hugging Face hub cache, Ollama, LM Studio, llama.cpp,
  GPT4All, torch hub, Downloads), home directories, and configured paths. It never follows a
  symlink nor crosses into another file system below a root (like `find -xdev`), and skips
  `.git`, `node_modules` and caches of the same kind. Each regular file costs one `lstat`; a file
  whose (device, inode, size, mtime) was already judged not to be a model is skipped without a
  read (the judged set persists across restarts, 8 bytes a file). Others get a 16-byte read and
  the library's quick check; only candidates are identified (`agent.modelfiles.identify_file`).
- **Hashes.** Each model's SHA-256 is computed in the background at a bounded rate and cached
  by (device, inode, size, mtime) in `<state_dir>/files.db`, so a restart re-hashes nothing.
  A model is reported (ModelFileObservation) once its hash is known, so policy can approve it
  by hash at first sight; `inventory()` lists it at once.
- **Changes.** watchdog (inotify on Linux) watches the model locations, Downloads, sync folders,
  removable media and configured paths recursively, and the folders of models found elsewhere
  non-recursively (at most `max_watches` watches in all). Events go into a bounded queue (drops
  are counted); a file is looked at when it is closed after writing, or when it has been quiet
  for `settle_seconds`. While a new file is being written, the writer is looked for in
  `/proc/*/fd` (newest processes first, bounded in processes and time).
- **Exfiltration.** A model arriving below a removable-media mount (from /proc/self/mountinfo,
  refreshed when the mount table changes) or a cloud-sync folder; an archive whose listing
  (zip, tar, the first entries of a compressed tar: bounded, nothing extracted, at most 16
  bytes inflated per entry) holds a model, or that is written by a process holding a known
  model open, or next to one; a model renamed from its format's name to an innocent one (same
  inode), or copied under an innocent name (same hash as a known model).
- **Fine-tuning artifacts** (adapters, `checkpoint-N/`, trainer and optimizer state) become
  TrainingArtifactObservations, with their writer when found, for FineTuningDetector.
"""

from __future__ import annotations

import bz2
import collections
import contextlib
import errno
import functools
import logging
import lzma
import os
import platform
import pwd
import re
import select
import stat
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import psutil
from umbra.v1 import finding_pb2 as fpb

from agent.catalog.locations import LocationCatalog, default_location_catalog, expand_location
from agent.modelfiles import classify_training_artifact, identify_file, looks_like_model_quick
from agent.modelfiles.formats import default_format_catalog
from agent.modelfiles.identify import HARD_MIN_BYTES
from agent.modelfiles.model import Malformed, Unavailable
from agent.modelfiles.ollama import iter_ollama_manifests
from agent.modelfiles.window import Window
from agent.modelfiles.ziplist import list_zip, local_data_offset
from agent.observations import (
    ModelFileObservation,
    ModelTransferObservation,
    Observation,
    ProcessObservation,
    TrainingArtifactObservation,
)
from agent.sensors.base import Sensor, SensorCapabilities, SensorState, SensorStatus
from agent.system import procfs
from agent.system.hashing import FileKey, FileStateStore, HashJob, SeenSet, TokenBucket, file_key, fingerprint
from agent.system.hashing import lower_thread_priority as _lower_priority

if TYPE_CHECKING:
    from agent.policy.rules import Policy

try:  # an optional dependency: without it the sensor inventories by scanning only
    from watchdog.events import (
        FileClosedEvent,
        FileCreatedEvent,
        FileDeletedEvent,
        FileModifiedEvent,
        FileMovedEvent,
        FileSystemEvent,
        FileSystemEventHandler,
    )
    from watchdog.observers import Observer

    WATCHDOG = True
except ImportError:  # pragma: no cover - the agent extra installs it
    WATCHDOG = False

log = logging.getLogger(__name__)

_LINUX = platform.system() == "Linux"
DOWNLOAD_KINDS: Final = frozenset({"hub_cache", "model_dir", "downloads"})
DESTINATION_KINDS: Final = frozenset({"removable_media", "sync_folder"})
SKIP_DIR_NAMES: Final = (".git", ".hg", ".svn", "node_modules", "__pycache__", ".Trash", ".npm", ".cargo")
_PSEUDO_FS: Final = frozenset(
    {
        "proc",
        "sysfs",
        "cgroup",
        "cgroup2",
        "devpts",
        "securityfs",
        "debugfs",
        "tracefs",
        "bpf",
        "binfmt_misc",
        "fusectl",
        "configfs",
        "mqueue",
        "hugetlbfs",
        "pstore",
        "autofs",
        "devtmpfs",
        "efivarfs",
        "nsfs",
        "overlay",
        "squashfs",
    }
)
_TRAINING_NAME: Final = re.compile(
    r"adapter_model\.(?:safetensors|bin)|adapter_config\.json|trainer_state\.json|optimizer\.(?:pt|bin)"
    r"|scheduler\.pt|training_args\.bin|rng_state(?:_\d+)?\.pth|.*optim_states\.pt"
)
_TRAINING_DIR: Final = re.compile(r"checkpoint-\d+|global_step\d+")
_HF_REPO: Final = re.compile(r"(models|datasets|spaces)--(.+)")
_ARCHIVE_SUFFIXES: Final = (".zip", ".tar", ".tgz", ".tar.gz", ".tar.xz", ".tar.bz2", ".tar.zst", ".7z")
_ZIP_MODEL_SUFFIXES: Final = frozenset({"npz", "keras", "pt", "pth", "ckpt", "bin", "mlmodel"})
MAX_PENDING: Final = 4096
MAX_OUT: Final = 4096
MAX_ARCHIVE_ENTRIES: Final = 1024
MAX_ARCHIVE_PEEKS: Final = 64
MAX_WRITER_PIDS: Final = 512
WRITER_BUDGET_S: Final = 0.05
HINT_WINDOW_S: Final = 600.0


@dataclass(frozen=True)
class Root:
    """A place the sensor knows: what kind it is, whether it scans and watches it."""

    path: str
    kind: str  # hub_cache, model_dir, downloads, sync_folder, removable_media, home, configured, model_folder
    name: str
    layout: str = ""
    hub: str = ""
    scan: bool = True
    watch: bool = True
    recursive: bool = True


@dataclass
class _Model:
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


@dataclass
class _Pending:
    first: float
    last: float
    due: float
    writer: ProcessObservation | None = None
    writer_at: float = 0.0
    writer_tries: int = 0
    moved_from: str = ""


@dataclass
class _HashTask:
    job: HashJob
    model: _Model | None  # None: a non-model file at a destination, compared with known hashes
    place: Root | None = None
    writer: ProcessObservation | None = None


@dataclass(frozen=True)
class HubHint:
    host: str
    bytes: int
    pid: int
    at: float


@dataclass(frozen=True)
class Mount:
    mount_point: str
    fstype: str
    source: str
    major: int
    minor: int


class FileSensor(Sensor):
    name = "files"
    capabilities = SensorCapabilities(needs_root=True, platforms=("Linux", "Darwin", "Windows"))

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
    ) -> None:
        self._state_path = state_path
        self._homes_given = homes
        self._paths = tuple(paths)
        self._default_roots = default_roots
        self._scan_homes = scan_homes
        self._catalog = catalog
        self._media_given = media_prefixes
        self._sync_given = tuple(sync_folders)
        self._files_rate = files_per_second
        self._read_rate = read_bytes_per_second
        self._hash_rate = hash_bytes_per_second
        self._settle = settle_seconds
        self._rescan_interval = rescan_interval
        self._max_tracked = max_tracked_files
        self._max_events = max_queued_events
        self._max_models = max_models
        self._max_watches = max_watches
        self._skip = frozenset(skip_dir_names)
        self._low_priority = low_priority
        self._find_writers = find_writers and _LINUX
        # Shared with other threads (the observer's, the pipeline's), under the lock:
        self._lock = threading.Lock()
        self._events: collections.deque[tuple[str, str, str, float]] = collections.deque()
        self._out: collections.deque[Observation] = collections.deque()
        self._inventory: dict[str, _Model] = {}
        self._hints: collections.deque[HubHint] = collections.deque(maxlen=64)
        self.dropped_events = 0
        self.hashed_bytes = 0  # read for hashing since start (a restart with the cache hashes nothing)
        self.dropped_observations = 0
        self._problems: dict[str, str] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.first_scan_done = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: Any = None
        self._watches: dict[str, Any] = {}
        self._policy_paths: tuple[str, ...] = ()  # watched_paths of the policy in force
        self._roots_changed = False

    # --- Sensor interface --------------------------------------------------------------------

    def status(self) -> SensorStatus:
        system = platform.system()
        if system not in self.capabilities.platforms:
            return SensorStatus(self.name, SensorState.INACTIVE, f"unsupported platform {system}")
        reasons = []
        if not WATCHDOG:
            reasons.append("watchdog not installed: inventory by periodic scan only, no change events")
        reasons.extend(v for _, v in sorted(self._problems.items()))
        if self.dropped_events:
            reasons.append(f"{self.dropped_events} file events dropped (queue full)")
        if reasons:
            return SensorStatus(self.name, SensorState.DEGRADED, "; ".join(reasons))
        return SensorStatus(self.name, SensorState.ACTIVE)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="umbra-files", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def poll(self) -> Sequence[Observation]:
        with self._lock:
            out = list(self._out)
            self._out.clear()
        return out

    # --- public API ----------------------------------------------------------------------------

    def inventory(self) -> list[fpb.ModelFileEvidence]:
        """The model files on this host now (sha256 empty while not yet hashed), by path."""
        with self._lock:
            models = sorted(self._inventory.values(), key=lambda m: m.path)
            return [_evidence(m) for m in models]

    def note_hub_transfer(self, host: str, nbytes: int, pid: int, at: float | None = None) -> None:
        """A hint from the network sensor: `pid` received `nbytes` from model hub `host`. A model
        file written by that process (or about that large) soon after is attributed to the hub."""
        with self._lock:
            self._hints.append(HubHint(host, nbytes, pid, time.time() if at is None else at))

    def apply_policy(self, policy: Policy) -> None:
        """The policy's watched paths join the roots: watched and scanned at once, dropped with it."""
        paths = tuple(dict.fromkeys(policy.watched_paths))
        with self._lock:
            if paths == self._policy_paths:
                return
            self._policy_paths = paths
            self._roots_changed = True
        self._wake.set()

    def watched(self) -> list[str]:
        """The paths watched for changes now."""
        with self._lock:
            return sorted(self._watches)

    # --- events (observer thread) --------------------------------------------------------------

    def _queue_event(self, kind: str, src: str, dest: str = "") -> None:
        with self._lock:
            if self._events and kind == "modified" and self._events[-1][:2] == (kind, src):
                return  # a write burst: one event is enough
            if len(self._events) >= self._max_events:
                self.dropped_events += 1
                return
            self._events.append((kind, src, dest, time.monotonic()))
        self._wake.set()

    # --- the worker ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._setup()
            while not self._stop.is_set():
                self._loop_once()
        except Exception as exc:  # a bug must not kill the agent; status says it
            log.exception("file sensor worker failed")
            self._problems["worker"] = f"worker stopped: {type(exc).__name__}: {exc}"
        finally:
            self._teardown()

    def _setup(self) -> None:
        if self._low_priority:
            for problem in _lower_priority():
                log.debug("file sensor: %s", problem)
        self._store: FileStateStore | None = None
        if self._state_path is not None:
            try:
                self._store = FileStateStore(self._state_path, max_hashes=max(self._max_models * 4, 1000))
            except Exception as exc:  # sqlite3.Error, OSError
                self._problems["store"] = (
                    f"hash cache not kept ({exc}): hashes are recomputed after a restart"
                )
        self._seen = SeenSet(self._max_tracked, self._store.load_seen() if self._store else b"")
        self._files_bucket = TokenBucket(self._files_rate, burst=max(self._files_rate / 10, 64))
        self._read_bucket = TokenBucket(self._read_rate, burst=max(self._read_rate / 10, 1 << 20))
        self._hash_bucket = TokenBucket(self._hash_rate, burst=max(self._hash_rate / 10, 1 << 20))
        self._pending: dict[str, _Pending] = {}
        self._writers_by_inode: collections.OrderedDict[tuple[int, int], ProcessObservation] = (
            collections.OrderedDict()
        )
        self._hash_urgent: collections.deque[_HashTask] = collections.deque()
        self._hash_background: collections.deque[_HashTask] = collections.deque()
        self._hash_current: _HashTask | None = None
        self._known_sha: dict[str, str] = {}  # sha256 -> a path holding it
        self._known_sizes: dict[int, int] = {}
        self._training_seen: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._ollama_names: dict[str, tuple[float, dict[str, str]]] = {}
        self._owners: dict[int, str] = {}
        self._generation = 0
        self._scan_queue: collections.deque[Root] = collections.deque()
        self._scan_stack: list[str] = []
        self._scan_root: Root | None = None
        self._scan_dev = 0
        self._scanned: set[str] = set()
        self._next_scan = 0.0
        self._next_settle = 0.0
        self._seen_saved_at = time.monotonic()
        self._seen_dirty = 0
        self._mounts = _MountWatcher()
        self._media_prefixes = tuple(
            _norm(p)
            for p in (self._media_given if self._media_given is not None else self._catalog_().media_prefixes)
        )
        self._removable: dict[str, Root] = {}
        self._roots = self._resolve_roots()
        self._root_paths = {r.path for r in self._roots if r.scan}
        if WATCHDOG:
            self._observer = Observer()
            self._observer.daemon = True
            self._observer.start()
            for root in self._roots:
                if root.watch:
                    self._watch(root.path, recursive=root.recursive)
        self._refresh_mounts()

    def _teardown(self) -> None:
        if self._observer is not None:
            with contextlib.suppress(Exception):
                self._observer.stop()
                self._observer.join(timeout=5)
            self._observer = None
        with self._lock:
            self._watches.clear()
        for task in (self._hash_current, *self._hash_urgent, *self._hash_background):
            if task is not None:
                task.job.close()
        store = getattr(self, "_store", None)
        if store is not None:
            with contextlib.suppress(Exception):
                store.save_seen(self._seen.to_bytes())
            store.close()

    def _loop_once(self) -> None:
        now = time.monotonic()
        if self._roots_changed:
            self._reroot()
        self._drain_events()
        if self._mounts.changed():
            self._refresh_mounts()
        if now >= self._next_settle:
            self._settle_due(now)
            self._next_settle = now + 0.1
        hashed = self._hash_step()
        scanned = self._scan_step()
        if not self._scan_queue and self._scan_root is None and now >= self._next_scan:
            self._plan_scan()
            return
        if self._seen_dirty and (now - self._seen_saved_at > 60 or self.first_scan_done.is_set()):
            self._save_seen()
        if hashed or scanned:
            return  # progress: go on (the steps themselves stop when a budget is spent)
        waits = []
        if self._hash_current or self._hash_urgent or self._hash_background:
            waits.append(self._hash_bucket.wait_time())
        if self._scan_root is not None or self._scan_queue:
            waits.append(max(self._files_bucket.wait_time(), self._read_bucket.wait_time()))
        wait = min([w for w in waits if w > 0] or [1.0])
        if self._pending:
            wait = min(wait, 0.1)
        self._wake.wait(wait)
        self._wake.clear()

    def _save_seen(self) -> None:
        if self._store is not None:
            try:
                self._store.save_seen(self._seen.to_bytes())
            except Exception as exc:
                self._problems["store"] = f"hash cache not kept: {exc}"
        self._seen_saved_at = time.monotonic()
        self._seen_dirty = 0

    # --- roots and watches ---------------------------------------------------------------------

    def _catalog_(self) -> LocationCatalog:
        if self._catalog is None:
            self._catalog = default_location_catalog()
        return self._catalog

    def _homes(self) -> list[Path]:
        if self._homes_given is not None:
            return [Path(h) for h in self._homes_given]
        homes: list[Path] = []
        with contextlib.suppress(Exception):
            for entry in pwd.getpwall():
                if 1000 <= entry.pw_uid < 65534 and entry.pw_dir not in ("", "/"):
                    homes.append(Path(entry.pw_dir))
        with contextlib.suppress(RuntimeError, KeyError):
            homes.append(Path.home())
        return list(dict.fromkeys(homes))

    def _resolve_roots(self) -> list[Root]:
        roots: dict[str, Root] = {}
        catalog = self._catalog_()
        homes = self._homes()

        def add(root: Root) -> None:
            if root.path not in roots and os.path.isdir(root.path):
                roots[root.path] = root

        if self._default_roots:
            for loc in catalog.locations:
                for pattern in loc.paths:
                    targets = (
                        [expand_location(pattern, h) for h in homes]
                        if pattern.startswith("~/")
                        else [expand_location(pattern, None)]
                    )
                    for target in targets:
                        if target is not None:
                            add(Root(_norm(str(target)), loc.kind, loc.name, loc.layout, loc.hub))
        for sync in catalog.sync_folders:
            for home in homes:
                for pattern in sync.paths:
                    with contextlib.suppress(OSError, ValueError):
                        for match in sorted(home.glob(pattern))[:8]:
                            add(Root(_norm(str(match)), "sync_folder", sync.name))
        for extra in self._sync_given:
            add(Root(_norm(extra), "sync_folder", os.path.basename(extra.rstrip("/")) or extra))
        for extra in self._paths:
            add(Root(_norm(extra), "configured", extra))
        with self._lock:
            pushed = self._policy_paths
        for extra in pushed:
            add(Root(_norm(extra), "configured", f"policy: {extra}"))
        if self._scan_homes:
            for home in homes:
                add(Root(_norm(str(home)), "home", str(home), watch=False))
        return sorted(roots.values(), key=lambda r: len(r.path), reverse=True)

    def _reroot(self) -> None:
        """The roots changed (a pushed policy): watch and scan the new ones now, unwatch the gone."""
        with self._lock:
            self._roots_changed = False
        before = {r.path: r for r in self._roots}
        self._roots = self._resolve_roots()
        self._root_paths = {r.path for r in self._roots if r.scan}
        after = {r.path: r for r in self._roots}
        for path in before.keys() - after.keys():
            self._unwatch(path)
        for path in sorted(after.keys() - before.keys()):
            root = after[path]
            if root.watch:
                self._watch(path, recursive=root.recursive)
            if root.scan:
                self._scan_queue.append(root)
        if after.keys() != before.keys():
            log.info("file sensor roots: %d (%s)", len(after), ", ".join(sorted(after)))

    def _watch(self, path: str, *, recursive: bool) -> bool:
        if self._observer is None or path in self._watches:
            return path in self._watches
        if len(self._watches) >= self._max_watches:
            self._problems["watches"] = f"watch limit ({self._max_watches}) reached: {path} is only rescanned"
            return False
        try:
            watch = self._observer.schedule(
                _Handler(self), path, recursive=recursive, event_filter=list(_EVENT_TYPES)
            )
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                self._problems["inotify"] = (
                    "inotify watch limit reached (fs.inotify.max_user_watches): changes under "
                    f"{path} are seen only by rescans"
                )
            elif exc.errno == errno.EMFILE:
                self._problems["inotify"] = "inotify instance limit reached (fs.inotify.max_user_instances)"
            elif exc.errno != errno.ENOENT:
                self._problems["watch"] = f"cannot watch {path}: {exc.strerror or exc}"
            return False
        with self._lock:
            self._watches[path] = watch
        return True

    def _unwatch(self, path: str) -> None:
        with self._lock:
            watch = self._watches.pop(path, None)
        if watch is not None and self._observer is not None:
            with contextlib.suppress(Exception):
                self._observer.unschedule(watch)

    def _refresh_mounts(self) -> None:
        current: dict[str, Root] = {}
        for mount in self._mounts.read():
            if mount.fstype in _PSEUDO_FS:
                continue
            under_prefix = any(
                mount.mount_point != p and mount.mount_point.startswith(p + "/") for p in self._media_prefixes
            )
            if under_prefix or (mount.mount_point != "/" and _removable_device(mount.major, mount.minor)):
                current[mount.mount_point] = Root(
                    mount.mount_point, "removable_media", mount.source or mount.fstype, scan=False
                )
        for gone in set(self._removable) - set(current):
            self._unwatch(gone)
        for new in set(current) - set(self._removable):
            self._watch(new, recursive=True)
        self._removable = current

    def _place(self, path: str) -> Root | None:
        best: Root | None = None
        for root in (*self._removable.values(), *self._roots):
            if (path == root.path or path.startswith(root.path + "/")) and (
                best is None or len(root.path) > len(best.path)
            ):
                best = root
        return best

    # --- scanning ------------------------------------------------------------------------------

    def _plan_scan(self) -> None:
        self._generation += 1
        self._scanned.clear()
        if self._generation > 1:
            self._roots = self._resolve_roots()
            self._root_paths = {r.path for r in self._roots if r.scan}
        # Model locations first (small, and where models are), then the rest, homes last.
        order = {"model_dir": 0, "hub_cache": 0, "downloads": 1, "configured": 2, "sync_folder": 3, "home": 4}
        planned = sorted((r for r in self._roots if r.scan), key=lambda r: (order.get(r.kind, 5), r.path))
        self._scan_queue = collections.deque(planned)
        self._next_scan = time.monotonic() + self._rescan_interval

    def _scan_step(self, batch: int = 64) -> bool:
        if self._scan_root is None:
            if not self._scan_queue:
                return False
            root = self._scan_queue.popleft()
            try:
                self._scan_dev = os.stat(root.path).st_dev
            except OSError:
                return True
            self._scan_root = root
            self._scan_stack = [root.path]
            self._scanned.add(root.path)
        if self._files_bucket.wait_time() > 0 or self._read_bucket.wait_time() > 0:
            return False
        done = 0
        while done < batch and self._scan_stack:
            directory = self._scan_stack.pop()
            here = 0
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        here += 1
                        self._scan_entry(entry)
            except OSError:
                pass
            done += here
            self._files_bucket.take(here)
        if not self._scan_stack:
            self._scan_root = None
            if not self._scan_queue:
                self._finish_scan()
        return True

    def _scan_entry(self, entry: os.DirEntry[str]) -> None:
        try:
            if entry.is_dir(follow_symlinks=False):
                if entry.name in self._skip or entry.path in self._scanned:
                    return
                if entry.path in self._root_paths:
                    return  # a root of its own: scanned in its turn
                st = entry.stat(follow_symlinks=False)
                if st.st_dev != self._scan_dev:
                    return
                if _TRAINING_DIR.fullmatch(entry.name):
                    self._training(entry.path, None)
                if entry.name.endswith((".mlpackage", ".mlmodelc")):
                    self._consider_package(entry.path, st)
                    return
                self._scan_stack.append(entry.path)
                return
            if not entry.is_file(follow_symlinks=False):
                return
            st = entry.stat(follow_symlinks=False)
        except OSError:
            return
        self._consider(entry.path, st, "inventory", None, "")

    def _finish_scan(self) -> None:
        generation = self._generation
        with self._lock:
            stale = [
                p for p, m in self._inventory.items() if m.generation < generation and not os.path.exists(p)
            ]
            for path in stale:
                self._forget(path)
        self._save_seen()
        self.first_scan_done.set()
        # Folders of models outside any watched root: watch them (not recursively) for renames.
        with self._lock:
            folders = {os.path.dirname(p) for p in self._inventory}
        for folder in sorted(folders):
            place = self._place(folder)
            if place is None or not (place.watch and place.recursive and place.path in self._watches):
                self._watch(folder, recursive=False)

    # --- judging one file ----------------------------------------------------------------------

    def _consider(
        self, path: str, st: os.stat_result, origin: str, writer: ProcessObservation | None, moved_from: str
    ) -> None:
        name = os.path.basename(path)
        if _TRAINING_NAME.fullmatch(name):
            self._training(path, writer)
            parent = os.path.dirname(path)
            if _TRAINING_DIR.fullmatch(os.path.basename(parent)):
                self._training(parent, writer)
        if st.st_size < HARD_MIN_BYTES:
            return
        key = file_key(st)
        fp = fingerprint(key)
        with self._lock:
            existing = self._inventory.get(path)
        if existing is not None and existing.key == key:
            existing.generation = self._generation
            return
        if fp in self._seen and origin == "inventory":
            return
        head = _peek(path, 16)
        self._read_bucket.take(len(head) or 1)
        place = self._place(path) if origin != "inventory" else None
        quick = looks_like_model_quick(head)
        suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        if not quick and not (head[:4] == b"PK\x03\x04" and suffix in _ZIP_MODEL_SUFFIXES):
            if origin != "inventory":
                self._not_a_model(path, st, head, place, writer)
            self._remember_judged(fp)
            return
        ident = identify_file(path)
        self._read_bucket.take(ident.bytes_read)
        if not ident.is_model or ident.info is None:
            if origin != "inventory":
                self._not_a_model(path, st, head, place, writer)
            self._remember_judged(fp)
            return
        info = ident.info
        model = _Model(
            path=path,
            key=key,
            format=info.format,
            confidence=ident.confidence,
            architecture=info.architecture or "",
            parameter_count=info.parameter_count or 0,
            quantization=info.quantization or "",
            model_name=info.model_name or "",
            owner=self._owner(st.st_uid),
            origin=origin,
            writer=writer,
            generation=self._generation,
            moved_from=moved_from,
        )
        self._adopt(model, place)

    def _consider_package(self, path: str, st: os.stat_result) -> None:
        ident = identify_file(path)
        self._read_bucket.take(ident.bytes_read)
        if ident.is_model and ident.info is not None:
            key = (st.st_dev, st.st_ino, ident.info.size_bytes, st.st_mtime_ns)
            model = _Model(
                path,
                key,
                ident.info.format,
                ident.confidence,
                ident.info.architecture or "",
                model_name=ident.info.model_name or "",
                owner=self._owner(st.st_uid),
                generation=self._generation,
                sha256="",
            )
            with self._lock:
                if len(self._inventory) < self._max_models:
                    self._inventory[path] = model
            model.announced = True
            self._emit(self._model_observation(model))  # a package has no single hash

    def _remember_judged(self, fp: int) -> None:
        self._seen.add(fp)
        self._seen_dirty += 1

    def _adopt(self, model: _Model, place: Root | None) -> None:
        """A model file found or changed: record it, plan what to report once it is hashed."""
        root = place or self._place(model.path)
        model.hub = self._hub(model.path, root, model.writer) if root is not None else ""
        if not model.model_name and root is not None and root.layout == "ollama":
            model.model_name = self._ollama_name(root.path, model.path, full=False)
        if model.origin != "inventory" and root is not None:
            if root.kind in DOWNLOAD_KINDS and model.origin == "new":
                model.origin = "download"
            elif root.kind in DESTINATION_KINDS:
                model.transfers.append(
                    self._transfer(
                        model, root.kind, root.path, "", model.writer, 0.95, f"model copied to {root.name}"
                    )
                )
        if model.moved_from and _disguised(model.moved_from, model.path, model.format):
            model.transfers.append(
                self._transfer(
                    model,
                    "rename",
                    model.path,
                    model.moved_from,
                    model.writer,
                    0.9,
                    f"renamed from {os.path.basename(model.moved_from)}",
                )
            )
        elif model.origin == "new" and not model.transfers and _innocent_suffix(model.path):
            model.check_disguised_copy = True
        with self._lock:
            old = self._inventory.get(model.path)
            if old is None and len(self._inventory) >= self._max_models:
                self._problems["models"] = (
                    f"more than {self._max_models} model files: the rest are not tracked"
                )
                return
            self._inventory[model.path] = model
            if len(self._known_sizes) >= 4 * self._max_models:
                self._known_sizes.clear()
            self._known_sizes[model.key[2]] = self._known_sizes.get(model.key[2], 0) + 1
        sha = model.sha256 or (self._store.get_hash(model.key) if self._store is not None else "")
        if sha:
            self._hashed(model, sha)
        else:
            task = _HashTask(HashJob(model.path, model.key), model)
            (self._hash_urgent if model.origin != "inventory" else self._hash_background).append(task)

    def _forget(self, path: str) -> None:
        """Drop an inventory entry (call with the lock held)."""
        model = self._inventory.pop(path, None)
        if model is not None and self._known_sha.get(model.sha256) == path:
            del self._known_sha[model.sha256]

    def _not_a_model(
        self,
        path: str,
        st: os.stat_result,
        head: bytes,
        place: Root | None,
        writer: ProcessObservation | None,
    ) -> None:
        """A new file that is not weights by content: an archive of one, or a copy of a known model's
        bytes at a destination (same size: worth hashing)."""
        if _archive_kind(head, path):
            self._archive(path, st, writer)
            return
        if place is not None and place.kind in DESTINATION_KINDS and st.st_size in self._known_sizes:
            self._hash_urgent.append(_HashTask(HashJob(path, file_key(st)), None, place, writer))

    # --- hashing -------------------------------------------------------------------------------

    def _hash_step(self) -> bool:
        task = self._hash_current
        if task is None:
            if self._hash_urgent:
                task = self._hash_urgent.popleft()
            elif self._hash_background:
                task = self._hash_background.popleft()
            else:
                return False
            self._hash_current = task
        if self._hash_bucket.wait_time() > 0:
            return False
        n = task.job.step()
        self.hashed_bytes += n
        self._hash_bucket.take(n)
        if task.job.done:
            self._hash_current = None
            sha = task.job.sha256
            if sha and self._store is not None:
                with contextlib.suppress(Exception):
                    self._store.put_hash(task.job.key, sha)
            if sha and task.model is not None:
                with self._lock:
                    current = self._inventory.get(task.model.path) is task.model
                if current:
                    self._hashed(task.model, sha)
            elif sha and task.place is not None:
                self._copy_by_hash(task, sha)
        return True

    def _hashed(self, model: _Model, sha: str) -> None:
        model.sha256 = sha
        with self._lock:
            other = self._known_sha.get(sha)
            if other is None or other == model.path or not os.path.exists(other):
                self._known_sha[sha] = model.path
                other = None
        if model.check_disguised_copy and other is not None:
            model.transfers.append(
                self._transfer(
                    model,
                    "rename",
                    model.path,
                    other,
                    model.writer,
                    0.85,
                    f"a copy of {os.path.basename(other)} under an innocent name",
                )
            )
        self._emit(self._model_observation(model))
        for transfer in model.transfers:
            source = transfer.source_path or (other or "")
            self._emit(replace(transfer, sha256=sha, source_path=source))
        model.transfers.clear()
        model.announced = True

    def _copy_by_hash(self, task: _HashTask, sha: str) -> None:
        with self._lock:
            source_path = self._known_sha.get(sha)
            source = self._inventory.get(source_path) if source_path else None
        if source is None or task.place is None:
            return
        st_size = task.job.key[2]
        self._emit(
            ModelTransferObservation(
                source_path=source.path,
                destination=task.job.path,
                destination_root=task.place.path,
                kind=task.place.kind,
                sha256=sha,
                size_bytes=st_size,
                format=source.format,
                model_name=source.model_name,
                confidence=0.95,
                reason=f"same SHA-256 as {source.path}, copied to {task.place.name}",
                owner=source.owner,
                process=task.writer,
                observed_at=time.time(),
            )
        )

    # --- events (worker side) ------------------------------------------------------------------

    def _drain_events(self) -> None:
        with self._lock:
            events = list(self._events)
            self._events.clear()
        now = time.monotonic()
        for kind, src, dest, at in events:
            if kind == "deleted":
                self._pending.pop(src, None)
                with self._lock:
                    self._forget(src)
            elif kind == "moved":
                self._moved(src, dest, at)
            else:
                self._touched(src, kind == "closed", at, now)

    def _touched(self, path: str, closed: bool, at: float, now: float, moved_from: str = "") -> None:
        pending = self._pending.get(path)
        if pending is None:
            if len(self._pending) >= MAX_PENDING:
                self.dropped_events += 1
                return
            pending = self._pending[path] = _Pending(at, at, at + self._settle, moved_from=moved_from)
        pending.last = at
        pending.due = at + 0.25 if closed else at + self._settle
        if (
            self._find_writers
            and pending.writer is None
            and pending.writer_tries < 4
            and now - pending.writer_at >= 0.3
        ):
            self._look_for_writer(path, pending, now)

    def _look_for_writer(self, path: str, pending: _Pending, now: float) -> None:
        name = os.path.basename(path)
        head = _peek(path, 512)
        if not (looks_like_model_quick(head) or _archive_kind(head, path) or _TRAINING_NAME.fullmatch(name)):
            return
        pending.writer_at = now
        pending.writer_tries += 1
        try:
            st = os.stat(path)
        except OSError:
            return
        with self._lock:
            hinted = [h.pid for h in self._hints if h.pid > 0]
        pid = find_writer(st.st_dev, st.st_ino, first=hinted)
        if pid is not None:
            pending.writer = process_facts(pid)
            if pending.writer is not None:
                self._writers_by_inode[(st.st_dev, st.st_ino)] = pending.writer
                while len(self._writers_by_inode) > 256:
                    self._writers_by_inode.popitem(last=False)

    def _moved(self, src: str, dest: str, at: float) -> None:
        pending = self._pending.pop(src, None)
        with self._lock:
            model = self._inventory.get(src)
        try:
            st = os.lstat(dest)
        except OSError:
            return
        if (
            model is not None
            and (model.key[0], model.key[1]) == (st.st_dev, st.st_ino)
            and stat.S_ISREG(st.st_mode)
        ):
            with self._lock:
                self._forget(src)
            moved = replace(
                model,
                path=dest,
                key=file_key(st),
                origin="moved",
                moved_from=src,
                transfers=[],
                announced=False,
                check_disguised_copy=False,
            )
            self._adopt(moved, self._place(dest))
            return
        now = time.monotonic()
        self._touched(dest, True, at, now, moved_from=src)
        new = self._pending.get(dest)
        if new is not None:
            new.moved_from = src
            if pending is not None and pending.writer is not None:
                new.writer = pending.writer

    def _settle_due(self, now: float) -> None:
        due = [p for p, pending in self._pending.items() if pending.due <= now]
        for path in due:
            pending = self._pending.pop(path)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if _TRAINING_DIR.fullmatch(os.path.basename(path)):
                    self._training(path, pending.writer)
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            writer = pending.writer or self._writers_by_inode.get((st.st_dev, st.st_ino))
            self._files_bucket.take(1)
            self._consider(path, st, "new", writer, pending.moved_from)

    # --- archives ------------------------------------------------------------------------------

    def _archive(self, path: str, st: os.stat_result, writer: ProcessObservation | None) -> None:
        entries, how = list_archive(path, st.st_size)
        self._read_bucket.take(64 << 10)
        with self._lock:
            models = list(self._inventory.values())
        by_name_size = {(os.path.basename(m.path), m.key[2]): m for m in models}
        by_size = {m.key[2]: m for m in models}
        found: list[tuple[str, int, _Model | None, float, str]] = []
        for name, size, head in entries:
            base = os.path.basename(name)
            source = by_name_size.get((base, size)) or by_size.get(size)
            if source is not None:
                found.append((name, size, source, 0.95, f"holds {name} ({how}), the size of {source.path}"))
            elif head and looks_like_model_quick(head):
                found.append((name, size, None, 0.85, f"holds {name} ({how}), model weights by content"))
        if not found and writer is not None:
            reading = procfs.open_files(writer.pid)[0]
            for model in models:
                if model.path in reading:
                    found.append(
                        (
                            "",
                            model.key[2],
                            model,
                            0.8,
                            f"written by pid {writer.pid} while it reads {model.path}",
                        )
                    )
                    break
        if not found:
            folder = os.path.dirname(path)
            for model in models:
                if os.path.dirname(model.path) == folder and st.st_size >= model.key[2] // 2:
                    found.append(
                        (
                            "",
                            model.key[2],
                            model,
                            0.6,
                            f"created next to {os.path.basename(model.path)}, as large as half of it or more",
                        )
                    )
                    break
        for name, size, source, confidence, reason in found[:8]:
            self._emit(
                ModelTransferObservation(
                    source_path=source.path if source else name,
                    destination=path,
                    destination_root=path,
                    kind="archive",
                    sha256=source.sha256 if source else "",
                    size_bytes=size,
                    format=source.format if source else "",
                    model_name=source.model_name if source else "",
                    confidence=confidence,
                    reason=reason,
                    owner=self._owner(st.st_uid),
                    process=writer,
                    observed_at=time.time(),
                )
            )

    # --- fine-tuning artifacts -----------------------------------------------------------------

    def _training(self, path: str, writer: ProcessObservation | None) -> None:
        if path in self._training_seen and writer is None:
            return
        label = classify_training_artifact(path)
        if label is None:
            return
        self._training_seen[path] = label
        while len(self._training_seen) > 4096:
            self._training_seen.popitem(last=False)
        try:
            owner = self._owner(os.lstat(path).st_uid)
        except OSError:
            owner = ""
        self._emit(TrainingArtifactObservation(path, label, owner, writer, time.time()))

    # --- helpers -------------------------------------------------------------------------------

    def _emit(self, obs: Observation) -> None:
        with self._lock:
            if len(self._out) >= MAX_OUT:
                self.dropped_observations += 1
                return
            self._out.append(obs)

    def _transfer(
        self,
        model: _Model,
        kind: str,
        destination: str,
        source: str,
        process: ProcessObservation | None,
        confidence: float,
        reason: str,
    ) -> ModelTransferObservation:
        return ModelTransferObservation(
            source_path=source,
            destination=model.path,
            destination_root=destination,
            kind=kind,
            sha256="",
            size_bytes=model.key[2],
            format=model.format,
            model_name=model.model_name,
            confidence=confidence,
            reason=reason,
            owner=model.owner,
            process=process,
            observed_at=time.time(),
        )

    def _model_observation(self, model: _Model) -> ModelFileObservation:
        return ModelFileObservation(
            path=model.path,
            format=model.format,
            size_bytes=model.key[2],
            sha256=model.sha256,
            confidence=model.confidence,
            origin=model.origin,
            architecture=model.architecture,
            parameter_count=model.parameter_count,
            quantization=model.quantization,
            model_name=model.model_name,
            hub=model.hub,
            owner=model.owner,
            writer=model.writer,
            observed_at=time.time(),
        )

    def _owner(self, uid: int) -> str:
        name = self._owners.get(uid)
        if name is None:
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            if len(self._owners) < 1024:
                self._owners[uid] = name
        return name

    def _hub(self, path: str, root: Root, writer: ProcessObservation | None) -> str:
        rel = path[len(root.path) + 1 :].split("/")
        if root.layout == "huggingface":
            for part in rel:
                m = _HF_REPO.fullmatch(part)
                if m:
                    repo = "/".join(m.group(2).split("--"))
                    prefix = "" if m.group(1) == "models" else m.group(1) + "/"
                    return f"huggingface.co/{prefix}{repo}"
        elif root.layout == "ollama":
            name = self._ollama_name(root.path, path, full=True)
            if name:
                return name
        elif root.layout == "publisher_repo" and len(rel) >= 3:
            return f"{root.hub}/{rel[0]}/{rel[1]}"
        hinted = self._hint_for(writer, os.path.getsize(path) if os.path.exists(path) else 0)
        return hinted or root.hub

    def _hint_for(self, writer: ProcessObservation | None, size: int) -> str:
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

    def _ollama_name(self, models_dir: str, blob: str, *, full: bool) -> str:
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


# --- watchdog glue -----------------------------------------------------------------------------

if WATCHDOG:
    _EVENT_TYPES: tuple[type[FileSystemEvent], ...] = (
        FileCreatedEvent,
        FileModifiedEvent,
        FileClosedEvent,
        FileMovedEvent,
        FileDeletedEvent,
    )

    class _Handler(FileSystemEventHandler):
        """Runs on the observer's thread: only queues (bounded), never touches a file."""

        def __init__(self, sensor: FileSensor) -> None:
            self._sensor = sensor

        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.is_directory:
                return
            src = os.fsdecode(event.src_path)
            dest = os.fsdecode(event.dest_path) if event.dest_path else ""
            self._sensor._queue_event(event.event_type, src, dest)
else:  # pragma: no cover
    _EVENT_TYPES = ()

    class _Handler:  # type: ignore[no-redef]
        def __init__(self, sensor: FileSensor) -> None:
            pass


# --- the mount table ---------------------------------------------------------------------------


class _MountWatcher:
    """/proc/self/mountinfo, re-read when the kernel says it changed (poll: POLLPRI)."""

    PATH = "/proc/self/mountinfo"

    def __init__(self) -> None:
        self._fd: int | None = None
        self._poll: Any = None
        self._fallback_at = 0.0
        if _LINUX:
            try:
                self._fd = os.open(self.PATH, os.O_RDONLY)
                self._poll = select.poll()
                self._poll.register(self._fd, select.POLLPRI | select.POLLERR)
            except OSError:
                self._fd = None

    def changed(self) -> bool:
        if self._poll is not None:
            try:
                return bool(self._poll.poll(0))
            except OSError:
                return False
        if time.monotonic() - self._fallback_at > 5.0:
            self._fallback_at = time.monotonic()
            return True
        return False

    def read(self) -> list[Mount]:
        if self._fd is not None:
            try:
                os.lseek(self._fd, 0, os.SEEK_SET)
                chunks = []
                while chunk := os.read(self._fd, 65536):
                    chunks.append(chunk)
                return parse_mountinfo(b"".join(chunks).decode("utf-8", "replace"))
            except OSError:
                return []
        out = []
        with contextlib.suppress(Exception):
            for part in psutil.disk_partitions(all=False):
                out.append(Mount(part.mountpoint, part.fstype, part.device, 0, 0))
        return out


def parse_mountinfo(text: str) -> list[Mount]:
    """proc(5) mountinfo: `id parent maj:min root mount_point options [optional...] - fstype source super`."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        major, _, minor = fields[2].partition(":")
        try:
            mounts.append(Mount(_unescape(fields[4]), tail[0], _unescape(tail[1]), int(major), int(minor)))
        except ValueError:
            continue
    return mounts


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def _removable_device(major: int, minor: int) -> bool:
    """/sys/dev/block/MAJ:MIN -> the disk (a partition's parent) -> its `removable` flag."""
    if major == 0:
        return False
    try:
        dev = os.path.realpath(f"/sys/dev/block/{major}:{minor}")
    except OSError:
        return False
    for candidate in (dev, os.path.dirname(dev)):
        try:
            with open(os.path.join(candidate, "removable"), "rb") as f:
                return f.read(1) == b"1"
        except OSError:
            continue
    return False


# --- writers -----------------------------------------------------------------------------------


def find_writer(
    dev: int,
    ino: int,
    *,
    first: Iterable[int] = (),
    max_pids: int = MAX_WRITER_PIDS,
    budget_s: float = WRITER_BUDGET_S,
) -> int | None:
    """The process holding (dev, ino) open for writing: hinted PIDs first, then the newest PIDs
    (highest numbers), at most `max_pids` processes and `budget_s` seconds. Linux only."""
    me = os.getpid()
    deadline = time.monotonic() + budget_s
    try:
        pids = sorted((int(p) for p in os.listdir("/proc") if p.isdigit()), reverse=True)
    except OSError:
        return None
    ordered = list(dict.fromkeys([*first, *pids]))[:max_pids]
    for pid in ordered:
        if pid == me:
            continue
        if time.monotonic() > deadline:
            return None
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds[:4096]:
            try:
                st = os.stat(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if st.st_ino == ino and st.st_dev == dev and _writable(pid, fd):
                return pid
    return None


def _writable(pid: int, fd: str) -> bool:
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as f:
            for line in f.read(4096).splitlines():
                if line.startswith(b"flags:"):
                    return int(line.split()[1], 8) & (os.O_WRONLY | os.O_RDWR) != 0
    except (OSError, ValueError, IndexError):
        pass
    return False


_BOOT_TIME = psutil.boot_time()


def process_facts(pid: int) -> ProcessObservation | None:
    facts = procfs.basic_facts(pid, _BOOT_TIME)
    if facts is None:
        return None
    try:
        user = psutil.Process(pid).username()
    except (psutil.Error, KeyError):
        user = ""
    return ProcessObservation(pid, facts.ppid, facts.name, facts.exe, facts.cmdline, user, facts.create_time)


# --- archive listings --------------------------------------------------------------------------

_TAR_MAGIC_AT: Final = 257


def _archive_kind(head: bytes, path: str) -> str:
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        return "zip"
    if len(head) >= 262 and head[_TAR_MAGIC_AT : _TAR_MAGIC_AT + 5] == b"ustar":
        return "tar"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:3] == b"BZh":
        return "bz2"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if head[:6] == b"7z\xbc\xaf\x27\x1c":
        return "7z"
    if path.lower().endswith(_ARCHIVE_SUFFIXES) and len(head) < 262:
        return "archive"
    return ""


def list_archive(path: str, size: int) -> tuple[list[tuple[str, int, bytes]], str]:
    """(entry name, size, first 16 bytes or b"") of the archive's first entries, and how it was
    read. Bounded: at most MAX_ARCHIVE_ENTRIES names, MAX_ARCHIVE_PEEKS peeks, 64 KiB inflated
    from a compressed stream, 16 bytes from any one zip entry; nothing is written anywhere."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return [], "unreadable"
    try:
        head = os.pread(fd, 64 << 10, 0)
        kind = _archive_kind(head, path)
        if kind == "zip":
            return _zip_entries(fd, head, size), "zip listing"
        if kind == "tar":
            return _tar_entries(lambda off, n: os.pread(fd, n, off), size), "tar listing"
        if kind in ("gzip", "xz", "bz2"):
            data = _inflate_front(kind, head)
            return _tar_entries(
                lambda off, n: data[off : off + n], len(data)
            ), f"first entries of a {kind} stream"
        return [], f"{kind or 'unknown'} archive: not listed"
    except (OSError, ValueError, Malformed, Unavailable, zlib.error, lzma.LZMAError, EOFError):
        return [], "unreadable archive"
    finally:
        os.close(fd)


def _zip_entries(fd: int, head: bytes, size: int) -> list[tuple[str, int, bytes]]:
    def reader(offset: int, n: int) -> bytes:
        return os.pread(fd, n, offset)

    win = Window(size, head, b"", reader, 2 << 20)
    listing = list_zip(win, MAX_ARCHIVE_ENTRIES)
    out = []
    for i, entry in enumerate(listing.entries):
        peek = b""
        if i < MAX_ARCHIVE_PEEKS and entry.size >= 16:
            try:
                start = local_data_offset(win, entry)
                raw = os.pread(fd, min(entry.compressed_size, 4096 if entry.method else 16), start)
                if entry.method == 0:
                    peek = raw[:16]
                elif entry.method == 8:
                    peek = zlib.decompressobj(-15).decompress(raw, 16)  # 16 bytes out at most
            except (OSError, Malformed, Unavailable, zlib.error):
                peek = b""
        out.append((entry.name, entry.size, peek))
    return out


def _inflate_front(kind: str, head: bytes, limit: int = 64 << 10) -> bytes:
    if kind == "gzip":
        return zlib.decompressobj(31).decompress(head, limit)
    if kind == "xz":
        return lzma.LZMADecompressor().decompress(head, max_length=limit)
    return bz2.BZ2Decompressor().decompress(head, max_length=limit)


def _tar_entries(read: Callable[[int, int], bytes], size: int) -> list[tuple[str, int, bytes]]:
    out: list[tuple[str, int, bytes]] = []
    offset = 0
    while len(out) < MAX_ARCHIVE_ENTRIES and offset + 512 <= size:
        header = read(offset, 512)
        if len(header) < 512 or header == b"\0" * 512:
            break
        if header[257:262] != b"ustar":
            break
        name = header[:100].split(b"\0", 1)[0]
        prefix = header[345:500].split(b"\0", 1)[0]
        try:
            length = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError:
            break
        full = (prefix + b"/" + name if prefix else name).decode("utf-8", "replace")
        if header[156:157] in (b"0", b"\0", b"7"):
            peek = read(offset + 512, 16) if len(out) < MAX_ARCHIVE_PEEKS else b""
            out.append((full, length, peek))
        offset += 512 + (length + 511) // 512 * 512
    return out


# --- small helpers -----------------------------------------------------------------------------


def _norm(path: str) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(path)))


def _peek(path: str, n: int) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError:
        return b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return os.pread(fd, n, 0)
    except OSError:
        return b""
    finally:
        os.close(fd)


def _suffix(path: str) -> str:
    name = os.path.basename(path)
    return name.rsplit(".", 1)[-1].lower() if "." in name.strip(".") else ""


@functools.lru_cache(maxsize=1)
def _model_extensions() -> frozenset[str]:
    return frozenset(e for f in default_format_catalog().formats.values() if f.model for e in f.extensions)


def _disguised(old: str, new: str, fmt: str) -> bool:
    """Renamed from a model's name to one that hides it: the old name had a model extension, the new
    one is not the format's own (a .gguf renamed .bin, .dat or .pdf)."""
    old_s, new_s = _suffix(old), _suffix(new)
    if old_s == new_s or old_s not in _model_extensions():
        return False
    entry = default_format_catalog().get(fmt)
    primary = entry.extensions[0] if entry is not None and entry.extensions else ""
    return new_s != primary


def _innocent_suffix(path: str) -> bool:
    suffix = _suffix(path)
    return (
        bool(suffix) and suffix not in _model_extensions() and suffix not in ("incomplete", "part", "partial")
    )


def _evidence(model: _Model) -> fpb.ModelFileEvidence:
    return fpb.ModelFileEvidence(
        path=model.path,
        format=model.format,
        size_bytes=model.key[2],
        sha256=model.sha256,
        architecture=model.architecture,
        parameter_count=model.parameter_count,
        quantization=model.quantization,
        model_name=model.model_name,
    )

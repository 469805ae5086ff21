"""watchdog glue: change events (inotify on Linux) into a bounded queue, and the watches, kept
within a limit, with the kernel's own limits said in the sensor's status."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
import warnings
from typing import Any

from agent.sensors.files.handover import Handover

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

Event = tuple[str, str, str, float]  # kind (created, modified, closed, moved, deleted), path, new path, when


class EventQueue(Handover[Event]):
    """Filled on the observer's thread, drained by the worker; full, it drops and counts (its
    `dropped` also counts changes the worker had no room to follow)."""

    def __init__(self, max_events: int, wake: threading.Event) -> None:
        super().__init__(max_events)
        self._wake = wake

    def put_event(self, kind: str, src: str, dest: str = "") -> None:
        if self.put((kind, src, dest, time.monotonic())):
            self._wake.set()

    def _repeats(self, last: Event, item: Event) -> bool:
        return item[0] == "modified" and last[:2] == item[:2]  # a write burst: one event is enough


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

        def __init__(self, events: EventQueue) -> None:
            self._events = events

        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.is_directory:
                return
            src = os.fsdecode(event.src_path)
            dest = os.fsdecode(event.dest_path) if event.dest_path else ""
            self._events.put_event(event.event_type, src, dest)
else:  # pragma: no cover
    _EVENT_TYPES = ()

    class _Handler:  # type: ignore[no-redef]
        def __init__(self, events: EventQueue) -> None:
            pass


class Watches:
    """The watched paths, scheduled without nesting: a path below a recursively watched one gets
    no watch of its own (watchdog would deliver its events twice and walk it twice), a recursive
    watch replaces those below it, and they come back if it goes. At most `max_watches` are
    scheduled; problems go into the sensor's `problems`."""

    def __init__(self, events: EventQueue, max_watches: int, problems: dict[str, str]) -> None:
        self._events = events
        self._max = max_watches
        self._problems = problems
        self._lock = threading.Lock()
        self._wanted: dict[str, bool] = {}  # path -> recursive, as asked
        self._watches: dict[str, tuple[Any, bool]] = {}  # scheduled: path -> (watch, recursive)
        self._observer: Any = None

    def start(self) -> None:
        if WATCHDOG:
            # A recursive inotify watch walks a new directory to watch its subdirectories and
            # also follows their own creation events, so when `mkdir -p` (a hub download's
            # models--ORG--NAME/blobs and snapshots/REV) races that walk, watchdog adds a
            # subdirectory twice and warns that its callback "will be Overwritten". It is the
            # same callback on the same watch: nothing is lost or doubled (watchdog's PR 1278
            # review: re-adding an already-watched path is safe). Only that message is silenced;
            # the doubling that is ours, nested watches, Watches never schedules.
            warnings.filterwarnings(
                "ignore",
                message=r"Callback with id '\d+' already exists for watch",
                category=RuntimeWarning,
                module=r"watchdog\.observers\.inotify",
            )
            self._observer = Observer()
            self._observer.daemon = True
            self._observer.start()

    def stop(self) -> None:
        if self._observer is not None:
            with contextlib.suppress(Exception):
                self._observer.stop()
                self._observer.join(timeout=5)
            self._observer = None
        with self._lock:
            self._watches.clear()
            self._wanted.clear()

    def paths(self) -> list[str]:
        """The paths asked for whose changes are seen (by their own watch or a recursive one above)."""
        with self._lock:
            return sorted(p for p in self._wanted if self._covered(p))

    def scheduled(self) -> list[str]:
        """The watches handed to watchdog: never one inside another recursive one."""
        with self._lock:
            return sorted(self._watches)

    def __contains__(self, path: str) -> bool:
        with self._lock:
            return path in self._wanted and self._covered(path)

    def watch(self, path: str, *, recursive: bool) -> bool:
        """Watch `path` (recursive: and all below it); True when its changes are now seen."""
        if self._observer is None:
            return False
        recursive = self._wanted[path] = recursive or self._wanted.get(path, False)
        with self._lock:
            covered = self._covered(path)
        if covered and not (recursive and not self._watches.get(path, (None, True))[1]):
            return True
        if not recursive:
            return self._schedule(path, False)
        self._sync()  # a recursive watch takes over those below it
        with self._lock:
            return self._covered(path)

    def unwatch(self, path: str) -> None:
        if self._wanted.pop(path, None) is not None and path in self._watches:
            self._sync()  # what it covered gets its own watch back

    def _covered(self, path: str) -> bool:
        """Under the lock: a scheduled watch sees `path`'s changes."""
        if path in self._watches:
            return True
        return any(recursive and _below(path, top) for top, (_, recursive) in self._watches.items())

    def _sync(self) -> None:
        """Schedule what is asked, ancestors first, skipping what a recursive watch already covers;
        unschedule what is no longer asked or now covered."""
        keep: dict[str, bool] = {}
        for path in sorted(self._wanted, key=len):
            recursive = self._wanted[path]
            if any(r and _below(path, top) for top, r in keep.items()):
                continue
            current = self._watches.get(path)
            if current is not None and current[1] == recursive:
                keep[path] = recursive
                continue
            if current is not None:
                self._unschedule(path)
            if self._schedule(path, recursive):
                keep[path] = recursive
        for path in [p for p in list(self._watches) if p not in keep]:
            self._unschedule(path)

    def _schedule(self, path: str, recursive: bool) -> bool:
        if len(self._watches) >= self._max:
            self._problems["watches"] = f"watch limit ({self._max}) reached: {path} is only rescanned"
            return False
        try:
            watch = self._observer.schedule(
                _Handler(self._events), path, recursive=recursive, event_filter=list(_EVENT_TYPES)
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
            self._watches[path] = (watch, recursive)
        return True

    def _unschedule(self, path: str) -> None:
        with self._lock:
            scheduled = self._watches.pop(path, None)
        if scheduled is not None and self._observer is not None:
            with contextlib.suppress(Exception):
                self._observer.unschedule(scheduled[0])


def _below(path: str, top: str) -> bool:
    return path.startswith(top.rstrip("/") + "/")

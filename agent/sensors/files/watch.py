"""watchdog glue: change events (inotify on Linux) into a bounded queue, and the watches, kept
within a limit, with the kernel's own limits said in the sensor's status."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
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
    """The watched paths (at most `max_watches`); problems go into the sensor's `problems`."""

    def __init__(self, events: EventQueue, max_watches: int, problems: dict[str, str]) -> None:
        self._events = events
        self._max = max_watches
        self._problems = problems
        self._lock = threading.Lock()
        self._watches: dict[str, Any] = {}
        self._observer: Any = None

    def start(self) -> None:
        if WATCHDOG:
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

    def paths(self) -> list[str]:
        with self._lock:
            return sorted(self._watches)

    def __contains__(self, path: str) -> bool:
        return path in self._watches

    def watch(self, path: str, *, recursive: bool) -> bool:
        if self._observer is None or path in self._watches:
            return path in self._watches
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
            self._watches[path] = watch
        return True

    def unwatch(self, path: str) -> None:
        with self._lock:
            watch = self._watches.pop(path, None)
        if watch is not None and self._observer is not None:
            with contextlib.suppress(Exception):
                self._observer.unschedule(watch)

"""Change events into files to examine: a file is looked at when it is closed after writing or
has been quiet for the settle time; while it is written its writer is looked for in /proc; a
model renamed in place keeps its identity; a deleted one leaves the inventory."""

from __future__ import annotations

import collections
import os
import stat
import time
from dataclasses import dataclass, replace
from typing import Final

from agent.catalog.training import is_training_dir, is_training_file
from agent.modelfiles import looks_like_model_quick
from agent.observations import ProcessObservation
from agent.sensors.files.archives import archive_kind
from agent.sensors.files.examine import Examiner
from agent.sensors.files.inventory import Inventory
from agent.sensors.files.naming import HubHints
from agent.sensors.files.watch import EventQueue
from agent.sensors.process.facts import describe_process
from agent.system import procfs
from agent.system.filehead import peek
from agent.system.hashing import file_key
from agent.system.writers import find_writer

MAX_PENDING: Final = 4096
MAX_WRITERS_BY_INODE: Final = 256


@dataclass
class _Pending:
    first: float
    last: float
    due: float
    writer: ProcessObservation | None = None
    writer_at: float = 0.0
    writer_tries: int = 0
    moved_from: str = ""


class Changes:
    """The worker's side of the event queue (its thread only)."""

    def __init__(
        self,
        events: EventQueue,
        inventory: Inventory,
        hints: HubHints,
        examiner: Examiner,
        *,
        settle_seconds: float,
        find_writers: bool,
    ) -> None:
        self._events = events
        self._inventory = inventory
        self._hints = hints
        self._examiner = examiner
        self._settle, self._find_writers = settle_seconds, find_writers
        self._pending: dict[str, _Pending] = {}
        self._writers_by_inode: collections.OrderedDict[tuple[int, int], ProcessObservation] = (
            collections.OrderedDict()
        )

    def __bool__(self) -> bool:
        """Files are waiting to settle."""
        return bool(self._pending)

    def drain(self) -> None:
        now = time.monotonic()
        for kind, src, dest, at in self._events.take():
            if kind == "deleted":
                self._pending.pop(src, None)
                self._inventory.forget(src)
            elif kind == "moved":
                self._moved(src, dest, at)
            else:
                self._touched(src, kind == "closed", at, now)

    def settle_due(self, now: float) -> None:
        due = [p for p, pending in self._pending.items() if pending.due <= now]
        for path in due:
            pending = self._pending.pop(path)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if is_training_dir(os.path.basename(path)):
                    self._examiner.training(path, pending.writer)
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            writer = pending.writer or self._writers_by_inode.get((st.st_dev, st.st_ino))
            self._examiner.settled(path, st, writer, pending.moved_from)

    def _touched(self, path: str, closed: bool, at: float, now: float, moved_from: str = "") -> None:
        pending = self._pending.get(path)
        if pending is None:
            if len(self._pending) >= MAX_PENDING:
                self._events.dropped += 1
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
        head = peek(path, 512)
        if not (looks_like_model_quick(head) or archive_kind(head, path) or is_training_file(name)):
            return
        pending.writer_at = now
        pending.writer_tries += 1
        try:
            st = os.stat(path)
        except OSError:
            return
        pid = find_writer(st.st_dev, st.st_ino, first=self._hints.pids())
        if pid is not None:
            pending.writer = describe_process(pid)
            if pending.writer is not None:
                # The known models it reads now, while it writes: what a copy or an archive is
                # made from (the one way its source is known, besides the same inode).
                reading = self._inventory.known_paths(procfs.open_files(pid)[0])
                pending.writer = replace(pending.writer, model_files=reading)
                self._writers_by_inode[(st.st_dev, st.st_ino)] = pending.writer
                while len(self._writers_by_inode) > MAX_WRITERS_BY_INODE:
                    self._writers_by_inode.popitem(last=False)

    def _moved(self, src: str, dest: str, at: float) -> None:
        pending = self._pending.pop(src, None)
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
            self._inventory.forget(src)
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
            self._examiner.adopt_moved(moved)
            return
        now = time.monotonic()
        self._touched(dest, True, at, now, moved_from=src)
        new = self._pending.get(dest)
        if new is not None:
            new.moved_from = src
            if pending is not None and pending.writer is not None:
                new.writer = pending.writer

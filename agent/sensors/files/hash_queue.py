"""The hash work: files of new events before the inventory's, one job at a time, a chunk a step
within the hashing budget, each result kept in the cache so a restart hashes nothing again."""

from __future__ import annotations

import collections
import contextlib
from dataclasses import dataclass

from agent.observations import ProcessObservation
from agent.sensors.files.archives import PackedMember
from agent.sensors.files.inventory import TrackedModel
from agent.sensors.files.roots import Root
from agent.system.hashing import FileStateStore, HashJob, TokenBucket


@dataclass
class HashTask:
    job: HashJob  # a file's, or an archive entry's (members.member_hash_job)
    model: TrackedModel | None  # None: a non-model file at a destination, compared with known hashes
    place: Root | None = None
    writer: ProcessObservation | None = None
    packed: PackedMember | None = None  # an archive's entry: its bytes, not the archive's, are hashed


class HashQueue:
    def __init__(self, bucket: TokenBucket, store: FileStateStore | None) -> None:
        self._bucket = bucket
        self._store = store
        self._urgent: collections.deque[HashTask] = collections.deque()
        self._background: collections.deque[HashTask] = collections.deque()
        self._current: HashTask | None = None

    @property
    def busy(self) -> bool:
        return self._current is not None or bool(self._urgent) or bool(self._background)

    def add(self, task: HashTask, *, urgent: bool) -> None:
        (self._urgent if urgent else self._background).append(task)

    def wait_time(self) -> float:
        return self._bucket.wait_time()

    def step(self) -> tuple[int, HashTask | None] | None:
        """None when nothing was hashed (no work, or the budget is spent); else the bytes read and
        the task, once finished (its `job.sha256` is "" when the file changed or went away)."""
        task = self._current
        if task is None:
            if self._urgent:
                task = self._urgent.popleft()
            elif self._background:
                task = self._background.popleft()
            else:
                return None
            self._current = task
        if self._bucket.wait_time() > 0:
            return None
        n = task.job.step()
        self._bucket.take(n)
        if not task.job.done:
            return n, None
        self._current = None
        if task.job.sha256 and self._store is not None and task.packed is None:  # keyed by file
            with contextlib.suppress(Exception):
                self._store.put_hash(task.job.key, task.job.sha256)
        return n, task

    def close(self) -> None:
        for task in (self._current, *self._urgent, *self._background):
            if task is not None:
                task.job.close()

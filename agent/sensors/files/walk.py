"""The directory walk: the roots one after the other, a batch of entries a step within the files
budget, never following a symlink nor crossing into another file system below a root (like
`find -xdev`), and skipping `.git`, `node_modules` and caches of the same kind."""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable
from typing import Final

from agent.catalog.training import is_training_dir
from agent.sensors.files.examine import Examiner
from agent.sensors.files.roots import Root
from agent.system.hashing import TokenBucket

SKIP_DIR_NAMES: Final = (".git", ".hg", ".svn", "node_modules", "__pycache__", ".Trash", ".npm", ".cargo")
_PACKAGE_SUFFIXES: Final = (".mlpackage", ".mlmodelc")  # Core ML models are folders


class Walker:
    """Walks planned roots in steps, handing the examiner each regular file, each Core ML
    package, and each training checkpoint folder (which it walks too)."""

    def __init__(
        self, skip_dir_names: Iterable[str], budgets: tuple[TokenBucket, TokenBucket], examiner: Examiner
    ) -> None:
        self._skip = frozenset(skip_dir_names)
        self._files_bucket, self._read_bucket = budgets
        self._examiner = examiner
        self._queue: collections.deque[Root] = collections.deque()
        self._stack: list[str] = []
        self._root: Root | None = None
        self._dev = 0
        self._walked: set[str] = set()
        self._root_paths: frozenset[str] = frozenset()

    @property
    def busy(self) -> bool:
        return self._root is not None or bool(self._queue)

    def plan(self, roots: Iterable[Root], all_roots: Iterable[Root]) -> None:
        """Walk `roots` from the start; a folder that is one of `all_roots` is left to its own turn."""
        self._walked.clear()
        self._queue = collections.deque(roots)
        self.set_root_paths(all_roots)

    def set_root_paths(self, all_roots: Iterable[Root]) -> None:
        self._root_paths = frozenset(r.path for r in all_roots if r.scan)

    def add(self, root: Root) -> None:
        self._queue.append(root)

    def wait_time(self) -> float:
        return max(self._files_bucket.wait_time(), self._read_bucket.wait_time())

    def step(self, batch: int = 64) -> tuple[bool, bool]:
        """(progress made, the last planned root was just finished)."""
        if self._root is None:
            if not self._queue:
                return False, False
            root = self._queue.popleft()
            try:
                self._dev = os.stat(root.path).st_dev
            except OSError:
                return True, False
            self._root = root
            self._stack = [root.path]
            self._walked.add(root.path)
        if self._files_bucket.wait_time() > 0 or self._read_bucket.wait_time() > 0:
            return False, False
        done = 0
        while done < batch and self._stack:
            directory = self._stack.pop()
            here = 0
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        here += 1
                        self._entry(entry)
            except OSError:
                pass
            done += here
            self._files_bucket.take(here)
        if not self._stack:
            self._root = None
            return True, not self._queue
        return True, False

    def _entry(self, entry: os.DirEntry[str]) -> None:
        try:
            if entry.is_dir(follow_symlinks=False):
                if entry.name in self._skip or entry.path in self._walked:
                    return
                if entry.path in self._root_paths:
                    return  # a root of its own: walked in its turn
                st = entry.stat(follow_symlinks=False)
                if st.st_dev != self._dev:
                    return
                if is_training_dir(entry.name):
                    self._examiner.training(entry.path, None)
                if entry.name.endswith(_PACKAGE_SUFFIXES):
                    self._examiner.consider_package(entry.path, st)
                    return
                self._stack.append(entry.path)
                return
            if not entry.is_file(follow_symlinks=False):
                return
            st = entry.stat(follow_symlinks=False)
        except OSError:
            return
        self._examiner.consider(entry.path, st, "inventory", None, "")

"""Deep process facts, judged: AI libraries mapped, model weights held, API-key names.

Shared by the process sensor and the GPU sensor, which follow different processes but
must say the same thing about each. Reading is `agent/system/procfs.py`'s job; this module
decides what the raw facts mean, with the process-signal catalog and the model-file
identification library (by content, never by name).
"""

from __future__ import annotations

import os
import platform
import re
import stat
from collections.abc import Sequence
from dataclasses import replace

import psutil

from agent.catalog.process_signals import ProcessSignals, default_process_signals
from agent.modelfiles import DEFAULT_MIN_MODEL_BYTES, ModelFileInfo, identify_file, looks_like_model_quick
from agent.observations import ProcessObservation
from agent.privacy.scrub import scrub_argv, scrub_text
from agent.system import procfs

MAX_FILES_PER_PROCESS = 64
_LINUX = platform.system() == "Linux"
_BOOT_TIME = psutil.boot_time()
_LIBRARY_FILE = re.compile(r"\.so(?:\.[0-9.]+)?$|\.dylib$|\.dll$|\.pyd$")


class ModelFileCache:
    """Is this path model weights? Answered by content, once per file version.

    Keyed by (device, inode, size, mtime), so a file is read again only when it changes. The
    first 16 bytes decide cheaply (most mapped files are not weights); only a likely model
    gets its header parsed. Bounded, so a process opening thousands of files cannot grow it.
    """

    def __init__(self, max_entries: int = 4096, min_size: int = DEFAULT_MIN_MODEL_BYTES) -> None:
        self._answers: dict[tuple[int, int, int, int], ModelFileInfo | None] = {}
        self._max = max_entries
        self._min_size = min_size

    def __call__(self, path: str) -> bool:
        return self.info(path) is not None

    def info(self, path: str) -> ModelFileInfo | None:
        """What the header says, or None when the file is not model weights (or unreadable)."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode) or st.st_size < self._min_size:
            return None  # weights are never this small; a 200-byte '.bin' is not a model
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key in self._answers:
            return self._answers[key]
        answer: ModelFileInfo | None = None
        try:
            with open(path, "rb") as f:
                head = f.read(16)
        except OSError:
            return None
        if looks_like_model_quick(head):
            found = identify_file(path)
            answer = found.info if found.verdict == "model" else None
        if len(self._answers) >= self._max:
            self._answers.clear()
        self._answers[key] = answer
        return answer


def process_identity(pid: int) -> tuple[ProcessObservation, int] | None:
    """Identity facts of one process (name, parent, start, exe, cmdline) and its RSS, cheaply:
    no user, no working directory. None when it is gone or hidden. The process sensor's per-PID
    read; `describe_process` adds the rest.

    Every process fact the agent holds is built here (`_observation`), so this is where the
    command line and the executable's path lose their secrets and prompts (agent/privacy/scrub.py):
    no detector, finding, spool row, wire message or log line downstream sees the raw ones."""
    if _LINUX:
        facts = procfs.basic_facts(pid, _BOOT_TIME)
        if facts is None:
            return None
        obs = _observation(pid, facts.ppid, facts.name, facts.exe, facts.cmdline, facts.create_time)
        return obs, facts.rss_bytes
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            name, ppid, created = proc.name(), proc.ppid(), proc.create_time()
            rss = proc.memory_info().rss
            try:
                exe = proc.exe()
            except psutil.AccessDenied:
                exe = ""
            try:
                cmdline = tuple(proc.cmdline())
            except psutil.AccessDenied:
                cmdline = ()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None
    return _observation(pid, ppid, name, exe, cmdline, created), rss


def _observation(
    pid: int, ppid: int, name: str, exe: str, cmdline: Sequence[str], created: float
) -> ProcessObservation:
    """A process's identity as the agent keeps it: command line and executable path scrubbed."""
    return ProcessObservation(pid, ppid, name, scrub_text(exe), tuple(scrub_argv(cmdline)), "", created)


def describe_process(pid: int) -> ProcessObservation | None:
    """One process as every sensor describes it: identity facts, user and working directory;
    None when it is gone. For sensors that meet a PID elsewhere (a socket, a GPU context, a
    file being written) and must name it."""
    found = process_identity(pid)
    if found is None:
        return None
    return replace(found[0], username=process_user(pid), cwd=process_cwd(pid))


def process_user(pid: int) -> str:
    """The process's user name; "" when hidden, gone, or a uid with no passwd entry."""
    try:
        return str(psutil.Process(pid).username())
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError):
        return ""


def process_cwd(pid: int) -> str:
    """The process's working directory; "" when hidden or gone."""
    try:
        return str(psutil.Process(pid).cwd())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


class DeepFacts:
    def __init__(self, signals: ProcessSignals | None = None, models: ModelFileCache | None = None) -> None:
        self.signals = signals or default_process_signals()
        self.models = models or ModelFileCache()

    def read(
        self,
        obs: ProcessObservation,
        open_files: tuple[Sequence[str], Sequence[str]] | None = None,
    ) -> ProcessObservation:
        """`obs` with libraries, model weights, files open for writing and API-key names.

        `open_files` (reading, writing) may be passed by a caller that has just read them.
        """
        mapped = procfs.mapped_files(obs.pid)
        reading, writing = open_files if open_files is not None else procfs.open_files(obs.pid)
        libraries = tuple(
            dict.fromkeys(base for path in mapped if self.signals.library(base := os.path.basename(path)))
        )
        models: list[ModelFileInfo] = []
        for path in dict.fromkeys((*mapped, *reading, *writing)):
            if len(models) >= MAX_FILES_PER_PROCESS:
                break
            if not _LIBRARY_FILE.search(path) and (info := self.models.info(path)) is not None:
                models.append(info)
        return replace(
            obs,
            libraries=libraries,
            models=tuple(models),
            model_files=tuple(m.path for m in models),
            written_files=tuple(writing[:MAX_FILES_PER_PROCESS]),
            env_key_names=procfs.env_var_names(obs.pid, self.signals.api_key_variables),
        )

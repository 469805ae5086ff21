"""GPU_AI_WORKLOAD: a process holds GPU memory with AI libraries loaded.

Also the GPU bookkeeping FINE_TUNING shares: `GpuUsage` keeps, per process instance, the peak
memory and SM utilisation on each GPU (what the evidence reports) and the current run of
samples (what "sustained use" means). Time comes from the observations' `sampled_at`, never
from a clock here, so a test walks through a ten-minute window in microseconds.

What makes a GPU process an AI workload, in order of weight:

==================================================================  ==========
signal                                                              confidence
==================================================================  ==========
a catalogued runtime (name, executable, command line)               the catalog's match
maps an inference engine, ML framework or training kernels          0.90
(process_signals.toml categories inference, ml_framework, training;
gpu_runtime alone is CUDA itself, which games and renderers load)
maps or holds model weights                                         0.90
each further kind of signal                                         +0.05, capped at 0.99
==================================================================  ==========

A process with none of these (a game, a video encoder, a desktop compositor) may still appear
in the sensor's observations; it makes no finding. One finding per workload, user and GPU, listing
each live instance on that GPU (instances.py).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from umbra.v1 import finding_pb2 as fpb

from agent.catalog.cmdline import basename, is_python, norm, python_target
from agent.catalog.process_signals import LibrarySignal, ProcessSignals, default_process_signals
from agent.catalog.runtimes import RuntimeCatalog, RuntimeMatch
from agent.delivery.tracker import FindingDraft
from agent.detection.drafts import process_draft
from agent.detection.evidence import gpu_evidence, runtime_evidence
from agent.detection.instances import Instances, program_draft
from agent.observations import GpuProcessObservation, Observation, ProcessObservation

AI_LIBRARY_CATEGORIES = frozenset({"inference", "ml_framework", "training"})
CONF_LIBRARY = 0.90
CONF_MODEL_FILE = 0.90
CORROBORATION = 0.05
CONF_CAP = 0.99

_MIB = 1024 * 1024


# --- GPU use over time ---------------------------------------------------------------------


@dataclass(frozen=True)
class GpuPeak:
    index: int
    uuid: str
    name: str
    memory_bytes: int | None  # None: NVML never reported this process's memory
    sm_percent: int | None
    context: str = ""  # "compute" or "graphics", as the latest read said


@dataclass(frozen=True)
class Sustained:
    seconds: float
    samples: int
    mean_sm_percent: float | None  # None: the GPU reports no per-process utilisation


@dataclass
class _Instance:
    peaks: dict[str, GpuPeak] = field(default_factory=dict)
    run_start: float | None = None  # first sample of the current unbroken run of GPU use
    last: float = float("-inf")  # newest sample time
    samples: int = 0  # distinct sample times in the run (two GPUs at once are one sample)
    sm_sum: float = 0.0
    sm_samples: int = 0
    stamp_sm: int | None = None  # the highest SM % at `last`, over the process's GPUs


class GpuUsage:
    """Per process instance: peaks per GPU, and whether its GPU use is sustained.

    Sustained: at least `min_samples` samples spanning at least `window` seconds, each with
    GPU memory held (or not reported), no two more than `window` apart, and, when the GPU
    reports per-process utilisation, a mean SM utilisation over the run of at least
    `min_utilization` percent. An instance not sampled for `forget_after` seconds is dropped.
    """

    def __init__(
        self,
        window: float = 60.0,
        min_samples: int = 5,
        min_utilization: float = 10.0,
        forget_after: float = 900.0,
    ) -> None:
        self.window = window
        self.min_samples = min_samples
        self.min_utilization = min_utilization
        self.forget_after = max(forget_after, window)
        self._instances: dict[str, _Instance] = {}
        self._newest = float("-inf")
        self._pruned_at = float("-inf")

    def __len__(self) -> int:
        return len(self._instances)

    def record(self, obs: GpuProcessObservation) -> None:
        stamp = obs.sampled_at
        state = self._instances.setdefault(obs.instance_key, _Instance())
        old = state.peaks.get(obs.gpu_uuid)
        state.peaks[obs.gpu_uuid] = GpuPeak(
            obs.gpu_index,
            obs.gpu_uuid,
            obs.gpu_name,
            _max(old.memory_bytes if old else None, obs.used_memory_bytes),
            _max(old.sm_percent if old else None, obs.sm_utilization_percent),
            obs.context,
        )
        holds = obs.used_memory_bytes is None or obs.used_memory_bytes > 0
        if stamp == state.last:  # the same poll, another GPU: one sample, its busiest GPU counts
            if holds and state.run_start is not None and obs.sm_utilization_percent is not None:
                if state.stamp_sm is None:
                    state.sm_sum += obs.sm_utilization_percent
                    state.sm_samples += 1
                elif obs.sm_utilization_percent > state.stamp_sm:
                    state.sm_sum += obs.sm_utilization_percent - state.stamp_sm
                state.stamp_sm = max(state.stamp_sm or 0, obs.sm_utilization_percent)
            return
        if stamp < state.last:
            return  # out of order: ignore rather than corrupt the run
        if not holds or stamp - state.last > self.window:
            state.run_start, state.samples, state.sm_sum, state.sm_samples = None, 0, 0.0, 0
        state.last = stamp
        state.stamp_sm = None
        if holds:
            if state.run_start is None:
                state.run_start = stamp
            state.samples += 1
            if obs.sm_utilization_percent is not None:
                state.sm_sum += obs.sm_utilization_percent
                state.sm_samples += 1
                state.stamp_sm = obs.sm_utilization_percent
        self._newest = max(self._newest, stamp)
        self._prune()

    def sustained(self, instance_key: str) -> Sustained | None:
        state = self._instances.get(instance_key)
        if state is None or state.run_start is None:
            return None
        seconds = state.last - state.run_start
        if state.samples < self.min_samples or seconds < self.window:
            return None
        mean = state.sm_sum / state.sm_samples if state.sm_samples else None
        if mean is not None and mean < self.min_utilization:
            return None
        return Sustained(seconds, state.samples, mean)

    def peaks(self, instance_key: str) -> list[GpuPeak]:
        state = self._instances.get(instance_key)
        return sorted(state.peaks.values(), key=lambda p: p.index) if state else []

    def _prune(self) -> None:
        if self._newest - self._pruned_at < self.forget_after / 4:
            return
        self._pruned_at = self._newest
        horizon = self._newest - self.forget_after
        for key in [k for k, s in self._instances.items() if s.last < horizon]:
            del self._instances[key]


def _max(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def coarse_bytes(value: int | None) -> int:
    """A peak for evidence, so a finding changes when the workload grows, not with every sample:
    whole 16 MiB below 1 GiB, whole 256 MiB above."""
    if not value:
        return 0
    step = 16 * _MIB if value < 1024 * _MIB else 256 * _MIB
    return value // step * step or value // _MIB * _MIB or value


def coarse_percent(value: int | None) -> int:
    return 0 if value is None else min(100, value // 10 * 10)


def human_bytes(value: int) -> str:
    return f"{value / (1024 * _MIB):.1f} GiB" if value >= 1024 * _MIB else f"{value // _MIB} MiB"


# --- who the process is ---------------------------------------------------------------------


def workload_identity(proc: ProcessObservation) -> str:
    """What makes two process instances the same workload: the executable, and for an
    interpreter the script (made absolute with the working directory) or `-m` module it runs.
    `python train.py` in two projects is two workloads; the same game restarted is one."""
    return _workload_identity(proc.exe or proc.name, proc.exe, proc.cmdline, proc.cwd)


# Both GPU detectors ask on every sample of every GPU process; the answer only changes with the
# command line, so it is kept for the processes of the moment (bounded).
@lru_cache(maxsize=4096)
def _workload_identity(exe: str, exe_path: str, argv: tuple[str, ...], cwd: str) -> str:
    names = {norm(basename(exe_path)), norm(basename(argv[0])) if argv else ""}
    if not any(is_python(n) for n in names if n):
        return exe
    target = python_target(argv)
    if target.module is not None:
        return f"{exe} -m {target.module}"
    if target.code:
        return f"{exe} -c"
    if target.script_index is None:
        return exe
    arg = argv[target.script_index]
    script = arg if os.path.isabs(arg) or not cwd else os.path.normpath(os.path.join(cwd, arg))
    return f"{exe} {script}"


def workload_label(proc: ProcessObservation) -> str:
    """A short name for summaries: the script or module, else the process name."""
    identity = workload_identity(proc)
    exe = proc.exe or proc.name
    if identity != exe:
        rest = identity[len(exe) :].strip()
        return rest if rest.startswith("-m") else os.path.basename(rest)
    return proc.name or os.path.basename(exe)


# --- the detector ---------------------------------------------------------------------------


class GpuWorkloadDetector:
    def __init__(
        self,
        catalog: RuntimeCatalog | None = None,
        signals: ProcessSignals | None = None,
        usage: GpuUsage | None = None,
    ) -> None:
        self.catalog = catalog
        self.signals = signals or default_process_signals()
        self.usage = usage if usage is not None else GpuUsage()
        # A process is judged on every poll; what it is does not change: match it once.
        self._match = lru_cache(maxsize=4096)(self._match_uncached)
        self.instances = Instances(live_by=(GpuProcessObservation,))

    def begin_poll(self, observations: Sequence[Observation]) -> None:
        self.instances.begin_poll(observations)

    def _match_uncached(self, name: str, exe: str, cmdline: tuple[str, ...], cwd: str) -> RuntimeMatch | None:
        if self.catalog is None:
            return None
        matches = self.catalog.match(name, exe, cmdline, [], cwd=cwd or None)
        return matches[0] if matches else None

    def detect(self, obs: Observation) -> list[FindingDraft]:
        if not isinstance(obs, GpuProcessObservation):
            return []
        self.usage.record(obs)
        if obs.used_memory_bytes == 0:
            return []  # a context without memory: not (yet) a workload
        proc = obs.process
        ai = ai_libraries(proc, self.signals)
        matched_on: list[str] = []
        reasons: list[str] = []
        confidences: list[float] = []
        runtime_id = runtime_name = ""
        match = self._match(proc.name, proc.exe, proc.cmdline, proc.cwd)
        if match is not None:
            runtime_id, runtime_name = match.entry.id, match.entry.name
            matched_on.extend(match.matched_on)
            reasons.extend(match.reasons)
            confidences.append(match.confidence)
        if ai:
            matched_on.append("library")
            reasons.append(f"maps {', '.join(dict.fromkeys(s.name for _, s in ai))}")
            confidences.append(CONF_LIBRARY)
        if proc.model_files:
            matched_on.append("model_file")
            reasons.append(f"maps or holds model weights {proc.model_files[0]}")
            confidences.append(CONF_MODEL_FILE)
        if not confidences:
            return []
        confidence = min(CONF_CAP, max(confidences) + CORROBORATION * (len(confidences) - 1))
        peak = next((p for p in self.usage.peaks(obs.instance_key) if p.uuid == obs.gpu_uuid), None)
        memory = coarse_bytes(peak.memory_bytes if peak else obs.used_memory_bytes)
        sm = coarse_percent(peak.sm_percent if peak else obs.sm_utilization_percent)
        held = human_bytes(memory) if memory else "memory not reported"
        reasons.append(f"holds {held} on GPU {obs.gpu_index} ({obs.gpu_name}), peak")
        what = runtime_name or workload_label(proc)
        ai_names = [b for b, _ in ai]
        draft = process_draft(
            proc,
            fpb.KIND_GPU_AI_WORKLOAD,
            f"{workload_identity(proc)}|{proc.username}|{obs.gpu_uuid}",
            fpb.SEVERITY_MEDIUM,
            confidence,
            f"{what} (pid {proc.pid}, {proc.username or 'unknown user'}) uses GPU "
            f"{obs.gpu_index} ({obs.gpu_name}), {held} at peak, with AI libraries loaded",
            subject=runtime_id,
            evidence=[
                gpu_evidence(obs.gpu_index, obs.gpu_name, memory, sm, ai_names, obs.gpu_uuid, obs.context),
                runtime_evidence(
                    proc,
                    runtime_id,
                    runtime_name,
                    matched_on,
                    reasons,
                    libraries=ai_names,
                    key_names=False,
                ),
            ],
        )
        return [program_draft(draft, self.instances.live(draft))]


def ai_libraries(proc: ProcessObservation, signals: ProcessSignals) -> list[tuple[str, LibrarySignal]]:
    """(basename, catalog signal) for the mapped libraries that mean AI, not just CUDA."""
    found = []
    for base in proc.libraries:
        signal = signals.library(base)
        if signal is not None and signal.category in AI_LIBRARY_CATEGORIES:
            found.append((base, signal))
    return found

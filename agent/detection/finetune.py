"""FINE_TUNING: a process that trains or fine-tunes a model, with the combined evidence.

The runtime is often plain `python`, so no name gives it away. Four independent kinds of
signal do, and the finding carries every one that was seen (the tools, artifact names and
script hints are agent/catalog/training.toml's; argv is read by agent/catalog/cmdline.py):

- **command line**: a training launcher or CLI (`accelerate launch`, `deepspeed`, `tune run`,
  `axolotl train`, `trl sft`, `llamafactory-cli train`, `mlx_lm.lora`, ...), its `python -m`
  module, or the options of Hugging Face's Trainer and of PEFT (`--deepspeed ds.json`,
  `--per_device_train_batch_size`, `--use_peft`, `--lora_r`);
- **maps**: training kernels mapped (the `training` category of process_signals.toml:
  DeepSpeed ops, bitsandbytes, FlashAttention);
- **writes**: training artifacts open for writing: `checkpoint-N/` directories, optimizer and
  scheduler state, LoRA adapters (`adapter_model.safetensors`), DeepSpeed `global_stepN/`;
- **GPU**: sustained GPU use (agent/detection/gpu.py, `GpuUsage`).

A finding needs the command line or the writes: training kernels are mapped by inference
servers too (vLLM maps FlashAttention), and sustained GPU use is what inference does as well.
Confidence grows with the number of kinds seen:

=========================  ==========
kinds of signal            confidence
=========================  ==========
1 (command line or writes)  0.60
2                           0.80
3                           0.90
4                           0.97
a training-like script      +0.05 (train.py, finetune.py, sft.py, run_clm.py; or torchrun),
name, with something else   capped at 0.99
=========================  ==========

Severity is high when the training runs on a GPU (sustained use seen), medium otherwise. The
dedupe key is the workload (executable plus script or module) and the user, so the ranks of
one distributed job are occurrences of one finding, which lists each live rank
(instances.py). What an instance wrote is remembered for
the life of the instance (checkpoints are written in bursts between polls), bounded.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache

from umbra.v1 import finding_pb2 as fpb

from agent.catalog.cmdline import basename, is_python, norm, python_target
from agent.catalog.process_signals import ProcessSignals, default_process_signals
from agent.catalog.training import TrainingTool, artifact_kind, default_training_catalog
from agent.delivery.tracker import FindingDraft
from agent.detection.drafts import process_draft
from agent.detection.evidence import gpu_evidence, runtime_evidence, training_artifact_evidence
from agent.detection.gpu import (
    GpuUsage,
    Sustained,
    ai_libraries,
    coarse_bytes,
    coarse_percent,
    human_bytes,
    workload_identity,
    workload_label,
)
from agent.detection.instances import Instances, program_draft
from agent.observations import (
    GpuProcessObservation,
    Observation,
    ProcessObservation,
    TrainingArtifactObservation,
)

CONFIDENCE_BY_KINDS = {1: 0.60, 2: 0.80, 3: 0.90, 4: 0.97}
HINT_BONUS = 0.05
CONF_CAP = 0.99
MAX_ARTIFACTS = 16  # remembered per process instance (newest kept)
MAX_ARTIFACT_EVIDENCE = 8
MAX_INSTANCES = 2048
MAX_ARGS = 64  # command-line tokens looked at


def artifact_format(path: str) -> str | None:
    """The kind of training artifact a written path is (agent/catalog/training.toml), or None."""
    return artifact_kind(path)


@dataclass(frozen=True)
class CommandLineSignals:
    tools: tuple[TrainingTool, ...]  # every tool the command line shows, strong ones first
    reasons: tuple[str, ...]
    hint: str = ""  # a training-like script name, or a weak launcher

    @property
    def strong(self) -> bool:
        return any(t.strong for t in self.tools)


def command_line_signals(proc: ProcessObservation) -> CommandLineSignals:
    """Training tools on a command line: program (or script), subcommand, `-m` module, options."""
    return _command_line_signals(proc.cmdline[:MAX_ARGS])


@lru_cache(maxsize=4096)  # a process is judged on every poll; its command line does not change
def _command_line_signals(argv: tuple[str, ...]) -> CommandLineSignals:
    if not argv:
        return CommandLineSignals((), ())
    catalog = default_training_catalog()
    program, after, module, script = _program(argv)
    found: list[TrainingTool] = []
    reasons: list[str] = []
    for tool in catalog.tools:
        why = ""
        if program and program in tool.programs:
            sub = next((a for a in argv[after:] if not a.startswith("-")), "")
            if not tool.subcommands:
                why = f"runs {program}"
            elif sub in tool.subcommands:
                why = f"runs {program} {sub}"
        if not why and module and any(module == m or module.startswith(m + ".") for m in tool.modules):
            why = f"runs python -m {module}"
        if not why and tool.options:
            opt = next((a.split("=", 1)[0] for a in argv if a.split("=", 1)[0] in tool.options), "")
            if opt:
                why = f"command line has {opt}"
        if why:
            found.append(tool)
            reasons.append(f"{why} ({tool.name})")
    hint = ""
    if script and catalog.script_hint(script) is not None:
        hint = f"script name {script!r} suggests training"
    weak = [t for t in found if not t.strong]
    if weak and not hint:
        hint = reasons[found.index(weak[0])]
    strong = [(t, r) for t, r in zip(found, reasons, strict=True) if t.strong]
    return CommandLineSignals(tuple(t for t, _ in strong), tuple(r for _, r in strong), hint)


def _program(argv: Sequence[str]) -> tuple[str, int, str, str]:
    """(program name, index after it, `-m` module, script basename) of a command line: argv[0],
    or what a Python interpreter runs."""
    first = norm(basename(argv[0]))
    if not is_python(first):
        return first, 1, "", first
    target = python_target(argv)
    if target.module is not None:
        return "", len(argv), target.module, ""
    if target.script_index is None:
        return "", len(argv), "", ""
    script = basename(argv[target.script_index])
    return script.lower(), target.script_index + 1, "", script


@dataclass
class _Job:
    process: ProcessObservation
    artifacts: OrderedDict[str, str] = field(default_factory=OrderedDict)  # path -> format, newest last


class FineTuningDetector:
    def __init__(self, signals: ProcessSignals | None = None, usage: GpuUsage | None = None) -> None:
        self.signals = signals or default_process_signals()
        self.usage = usage if usage is not None else GpuUsage()
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self.instances = Instances(live_by=(ProcessObservation, GpuProcessObservation))

    def begin_poll(self, observations: Sequence[Observation]) -> None:
        self.instances.begin_poll(observations)

    def detect(self, obs: Observation) -> list[FindingDraft]:
        if isinstance(obs, GpuProcessObservation):
            self.usage.record(obs)
            proc = obs.process
        elif isinstance(obs, ProcessObservation):
            proc = obs
        elif isinstance(obs, TrainingArtifactObservation) and obs.writer is not None:
            # The file sensor saw a training artifact's writer: a write, as the process sensor reports one.
            written = obs.path + ("/" if obs.label.endswith("checkpoint") else "")
            proc = replace(obs.writer, written_files=(written,))
        else:
            return []
        job = self._remember(proc)
        return self._judge(job)

    def _remember(self, proc: ProcessObservation) -> _Job:
        key = proc.instance_key
        job = self._jobs.pop(key, None) or _Job(proc)
        self._jobs[key] = job  # most recently seen last: the oldest go first when full
        if len(self._jobs) > MAX_INSTANCES:
            self._jobs.popitem(last=False)
        if proc.libraries or not job.process.libraries:
            job.process = proc  # the process sensor refreshes maps slowly: keep what was known
        else:
            job.process = _with_libraries(proc, job.process.libraries)
        for path in proc.written_files:
            fmt = artifact_format(path)
            if fmt is not None:
                job.artifacts.pop(path, None)
                job.artifacts[path] = fmt
                while len(job.artifacts) > MAX_ARTIFACTS:
                    job.artifacts.popitem(last=False)
        return job

    def _judge(self, job: _Job) -> list[FindingDraft]:
        proc = job.process
        cmd = command_line_signals(proc)
        training_libs = [(b, s) for b, s in ai_libraries(proc, self.signals) if s.category == "training"]
        sustained = self.usage.sustained(proc.instance_key)
        if not cmd.strong and not job.artifacts:
            return []
        matched_on: list[str] = []
        reasons: list[str] = []
        if cmd.strong:
            matched_on.append("cmdline")
            reasons.extend(cmd.reasons)
        if training_libs:
            matched_on.append("library")
            names = ", ".join(dict.fromkeys(s.name for _, s in training_libs))
            reasons.append(f"maps training kernels ({names})")
        if job.artifacts:
            matched_on.append("written_file")
            reasons.append(_artifact_reason(job.artifacts))
        if sustained is not None:
            matched_on.append("gpu")
            reasons.append(_sustained_reason(sustained, self.usage))
        confidence = CONFIDENCE_BY_KINDS[len(matched_on)]
        if cmd.hint:
            reasons.append(cmd.hint)
            confidence = min(CONF_CAP, confidence + HINT_BONUS)
        peaks = self.usage.peaks(proc.instance_key) if sustained is not None else []
        ai_names = [b for b, _ in ai_libraries(proc, self.signals)]
        tool = cmd.tools[0] if cmd.tools else None
        evidence = [
            runtime_evidence(proc, tool.id if tool else "", tool.name if tool else "", matched_on, reasons),
            *(
                gpu_evidence(
                    p.index,
                    p.name,
                    coarse_bytes(p.memory_bytes),
                    coarse_percent(p.sm_percent),
                    ai_names,
                    p.uuid,
                    p.context,
                )
                for p in peaks
            ),
            *(
                training_artifact_evidence(path, fmt)
                for path, fmt in sorted(list(job.artifacts.items())[-MAX_ARTIFACT_EVIDENCE:])
            ),
        ]
        where = ""
        if peaks:
            top = max(peaks, key=lambda p: p.memory_bytes or 0)
            held = coarse_bytes(top.memory_bytes)
            where = f" on GPU {top.index} ({top.name}{', ' + human_bytes(held) if held else ''})"
        via = f" with {tool.name}" if tool else ""
        draft = process_draft(
            proc,
            fpb.KIND_FINE_TUNING,
            f"{workload_identity(proc)}|{proc.username}",
            fpb.SEVERITY_HIGH if sustained is not None else fpb.SEVERITY_MEDIUM,
            confidence,
            f"Model training by {proc.username or 'an unknown user'}: {workload_label(proc)} "
            f"(pid {proc.pid}){via}{where}; {len(matched_on)} "
            f"kind{'' if len(matched_on) == 1 else 's'} of evidence",
            subject=tool.id if tool else "",
            evidence=evidence,
        )
        return [program_draft(draft, self.instances.live(draft))]


def _with_libraries(proc: ProcessObservation, libraries: tuple[str, ...]) -> ProcessObservation:
    return replace(proc, libraries=libraries)


def _artifact_reason(artifacts: OrderedDict[str, str]) -> str:
    newest = next(reversed(artifacts))
    kinds = ", ".join(sorted({f.replace("_", " ") for f in artifacts.values()}))
    more = f" and {len(artifacts) - 1} more" if len(artifacts) > 1 else ""
    return f"writes training artifacts ({kinds}): {newest}{more}"


def _sustained_reason(sustained: Sustained, usage: GpuUsage) -> str:
    util = (
        f"mean SM utilisation at least {usage.min_utilization:g}%"
        if sustained.mean_sm_percent is not None
        else "per-process utilisation not reported"
    )
    return f"sustained GPU use: memory held for at least {usage.window:g} s ({util})"

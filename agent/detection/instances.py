"""Every live instance of a program, visible in the one finding about the program.

A process finding's dedupe key names a program (a runtime's executable run by one user, a
training script, the clients of one service), so a restart adds to the finding's count instead
of making a new finding. Several instances of one program can be alive at once, though: `ollama
serve` and its runners, two llama-servers on two ports, the ranks of a training job, two scripts
calling one API. `Instances` remembers each live instance's own draft under its finding's key,
and `program_draft` builds the finding from all of them: the oldest live instance is the
finding's process, every instance's evidence appears once, followed by one `instance` evidence
per live instance (pid, command line, user, start, listening sockets, weights), and the summary
counts them. The draft is the same whichever instance's observation produced it, so a poll that
sees N unchanged instances sends nothing, and one that sees an instance come or go sends once.

When is an instance live? `begin_poll` is handed each sensor's whole poll (agent/pipeline.py).
The process sensor reports every followed process on every poll and the GPU sensor every process
holding a GPU, so for the observation types a detector names in `live_by`, an instance is live
while the newest poll that carried such observations lists it. With `window` instead (flows,
whose clients no sensor lists), an instance is live while it was seen in the last `window`
seconds of observation time. A detector fed one observation at a time, never a poll, lists every
instance it saw, up to the bounds.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

from umbra.v1 import finding_pb2 as fpb

from agent.delivery.tracker import FindingDraft
from agent.detection.evidence import instance_evidence
from agent.observations import GpuProcessObservation, ProcessObservation

MAX_LISTED = 16  # instances listed in one finding (the oldest): a bound on its size, not on detection
MAX_REMEMBERED = 64  # instances remembered per program (the most recently seen)
MAX_PROGRAMS = 4096  # programs remembered at once (the most recently seen)
SUMMARY_NAMED = 4  # instances the summary names; the evidence lists them all

_Program = tuple[int, str]  # (finding kind, dedupe key)
_Polled = type[ProcessObservation] | type[GpuProcessObservation]  # observations that carry a process


class Live(NamedTuple):
    listed: list[FindingDraft]  # the oldest first, at most `max_listed`
    total: int  # live instances, listed or not


@dataclass
class _Seen:
    draft: FindingDraft
    process: ProcessObservation
    at: float


class Instances:
    def __init__(
        self,
        live_by: tuple[_Polled, ...] = (),
        *,
        window: float | None = None,
        max_listed: int = MAX_LISTED,
        max_remembered: int = MAX_REMEMBERED,
        max_programs: int = MAX_PROGRAMS,
    ) -> None:
        """live_by: the observation types whose polls say which instances are live; window:
        seconds of observation time an instance stays live after it was last seen instead."""
        self.live_by = live_by
        self.window = window
        self.max_listed = max(max_listed, 1)
        self.max_remembered = max(max_remembered, self.max_listed)
        self.max_programs = max(max_programs, 1)
        self._polled: dict[_Polled, frozenset[str]] = {}  # observation type -> instances its last poll listed
        self._programs: OrderedDict[_Program, OrderedDict[str, _Seen]] = OrderedDict()
        self._newest = float("-inf")
        # Dead instances leave a program once per poll, not on each of its instances' observations:
        # a job of N workers would otherwise cost N^2 per poll.
        self._poll = 0
        self._pruned: dict[_Program, int] = {}

    def __len__(self) -> int:
        """How many programs are remembered."""
        return len(self._programs)

    def begin_poll(self, observations: Sequence[object]) -> None:
        """A sensor's whole poll, before its observations are detected one by one."""
        polled: dict[_Polled, set[str]] = {}
        for obs in observations:
            if isinstance(obs, self.live_by):
                polled.setdefault(type(obs), set()).add(obs.instance_key)
        # A poll without such observations leaves the sets alone: it may be another sensor's.
        self._polled.update((kind, frozenset(keys)) for kind, keys in polled.items())
        if polled:
            self._poll += 1

    def live(self, draft: FindingDraft, at: float = 0.0) -> Live:
        """Remember `draft` (one instance's, seen at `at`) and return the live instances' drafts
        of its program, the oldest process first, at most `max_listed`, and how many live."""
        proc = draft.process
        if proc is None:
            return Live([draft], 1)
        self._newest = max(self._newest, at)
        program = self._programs.pop((draft.kind, draft.key), None) or OrderedDict()
        self._programs[(draft.kind, draft.key)] = program
        while len(self._programs) > self.max_programs:
            gone, _ = self._programs.popitem(last=False)
            self._pruned.pop(gone, None)
        program.pop(proc.instance_key, None)
        program[proc.instance_key] = _Seen(draft, proc, at)
        if self.window is not None or self._pruned.get((draft.kind, draft.key)) != self._poll:
            self._pruned[(draft.kind, draft.key)] = self._poll
            for key in [
                k for k, seen in program.items() if k != proc.instance_key and not self._is_live(seen)
            ]:
                del program[key]
        while len(program) > self.max_remembered:
            program.popitem(last=False)
        ordered = sorted(program.values(), key=lambda s: (s.process.create_time, s.process.pid))
        return Live([s.draft for s in ordered[: self.max_listed]], len(ordered))

    def _is_live(self, seen: _Seen) -> bool:
        if self.window is not None:
            return seen.at >= self._newest - self.window
        polls = [self._polled[kind] for kind in self.live_by if kind in self._polled]
        return not polls or any(seen.process.instance_key in keys for keys in polls)


def program_draft(current: FindingDraft, instances: Live) -> FindingDraft:
    """The finding about a program from its live instances' drafts (oldest first): the
    oldest instance's draft with every instance's evidence once, the instance list, the highest
    severity and confidence. The occurrence is `current`'s when it is listed, so the tracker
    counts the listed instances; an instance beyond the list (a job's 17th worker) brings the
    oldest one's, which the tracker remembers, so more live instances than it remembers
    (MAX_REMEMBERED_OCCURRENCES) cannot make the count grow on every poll."""
    live = instances.listed
    primary = live[0] if live else current
    listed = any(d.occurrence == current.occurrence for d in live)
    evidence: dict[bytes, fpb.Evidence] = {}
    for draft in live or [current]:
        for ev in draft.evidence:
            evidence.setdefault(ev.SerializeToString(deterministic=True), ev)
    return with_instances(
        replace(
            primary,
            severity=max(d.severity for d in live or [current]),
            confidence=max(d.confidence for d in live or [current]),
            occurrence=current.occurrence if listed else primary.occurrence,
            evidence=list(evidence.values()),
        ),
        [d.process for d in live if d.process is not None],
        instances.total,
    )


def with_instances(
    draft: FindingDraft, processes: Sequence[ProcessObservation], total: int, what: str = "live instances"
) -> FindingDraft:
    """`draft` with one instance evidence per process (the listed ones of `total`), and the summary
    naming them when there are several."""
    summary = draft.summary
    if total > 1:
        named = ", ".join(_brief(p) for p in processes[:SUMMARY_NAMED])
        more = f" and {total - min(len(processes), SUMMARY_NAMED)} more" if total > SUMMARY_NAMED else ""
        unlisted = f" ({total - len(processes)} not listed)" if total > len(processes) else ""
        summary = f"{summary}; {total} {what}{unlisted}: {named}{more}"
    return replace(draft, summary=summary, evidence=[*draft.evidence, *(_instance(p) for p in processes)])


# Each instance is listed in its program's finding once per observation of any instance of it, so
# its evidence is built once and kept (the messages are only read and copied, never changed).
_MAX_KEPT = 4096
_kept: dict[tuple[object, ...], fpb.Evidence] = {}


def _instance(proc: ProcessObservation) -> fpb.Evidence:
    key = (
        proc.pid,
        proc.ppid,
        proc.name,
        proc.exe,
        proc.cmdline,
        proc.username,
        proc.create_time,
        proc.listening,
        proc.model_files,
    )  # what instance_evidence reads
    evidence = _kept.get(key)
    if evidence is None:
        if len(_kept) >= _MAX_KEPT:
            _kept.clear()
        evidence = _kept[key] = instance_evidence(proc)
    return evidence


def _brief(proc: ProcessObservation) -> str:
    where = f" on {', '.join(map(str, proc.listening))}" if proc.listening else ""
    return f"pid {proc.pid}{where}"

"""Loader for training.toml: training tools, training-artifact names and training-like script names.

The one place these names live. Fine-tuning detection reads the tools on command lines and
the kind of artifact a written path is (`artifact_kind`); the file sensor asks which names are
worth confirming on disk (`is_training_file`, `is_training_dir`), and
agent/modelfiles/training.py confirms them by content (`confirmable_file`, `confirmable_dir`);
the command-line parser looks through the launchers (`launchers`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from agent.catalog import source

__all__ = [
    "ARTIFACT_KINDS",
    "CONFIRMATIONS",
    "LABELS",
    "ScriptHint",
    "TrainingArtifact",
    "TrainingCatalog",
    "TrainingTool",
    "artifact_kind",
    "default_training_catalog",
    "is_training_dir",
    "is_training_file",
    "parse_training_catalog",
]

#: What a written path is to fine-tuning detection (the evidence's format).
ARTIFACT_KINDS: Final = frozenset(
    {"lora_adapter", "deepspeed_checkpoint", "trainer_checkpoint", "optimizer_state"}
)
#: How agent/modelfiles/training.py confirms an artifact by content.
CONFIRMATIONS: Final = frozenset(
    {
        "peft_adapter",
        "peft_config",
        "trainer_state",
        "torch",
        "deepspeed_optimizer",
        "trainer_checkpoint",
        "deepspeed_checkpoint",
    }
)
#: The labels of confirmed artifacts (a PEFT adapter of a non-LoRA type is a "peft_adapter").
LABELS: Final = frozenset(
    {
        "lora_adapter",
        "peft_adapter",
        "trainer_checkpoint",
        "deepspeed_checkpoint",
        "trainer_state",
        "optimizer_state",
        "scheduler_state",
        "rng_state",
        "training_args",
    }
)
_DIRECTORY_CONFIRMATIONS: Final = frozenset({"trainer_checkpoint", "deepspeed_checkpoint"})
_MEMBER_CONFIRMATIONS: Final = frozenset({"trainer_checkpoint", "peft_adapter", "peft_config"})
_TOP_KEYS: Final = frozenset({"schema_version", "tool", "artifact", "script_hint"})
_TOOL_LISTS: Final = ("programs", "subcommands", "modules", "options", "value_options")
_TOOL_KEYS: Final = frozenset({"id", "name", "source", "strong", "launcher", *_TOOL_LISTS})
_ARTIFACT_STRINGS: Final = ("id", "name", "source", "kind", "confirm", "label")
_ARTIFACT_LISTS: Final = ("files", "directories", "members")
_ARTIFACT_KEYS: Final = frozenset({*_ARTIFACT_STRINGS, *_ARTIFACT_LISTS})
_HINT_KEYS: Final = frozenset({"id", "name", "source", "patterns"})
_REQUIRED: Final = ("id", "name", "source")


@dataclass(frozen=True)
class TrainingTool:
    """A training launcher, CLI or option set, as it shows on a command line."""

    id: str
    name: str
    source: str
    programs: tuple[str, ...] = ()  # argv[0]'s basename, or the script an interpreter runs
    subcommands: tuple[str, ...] = ()  # when given, the program must be followed by one of them
    modules: tuple[str, ...] = ()  # `python -m MODULE`; "a.b" also matches "a.b.c"
    options: tuple[str, ...] = ()  # "--opt" or "--opt=value" anywhere on the command line
    strong: bool = True  # False: a hint that only adds to other evidence (torchrun)
    launcher: bool = False  # it runs a script named in its arguments
    value_options: tuple[str, ...] = ()  # launcher options whose value is a separate argument


@dataclass(frozen=True)
class TrainingArtifact:
    """Files or directories a training run writes, by name."""

    id: str
    name: str
    source: str
    kind: str  # one of ARTIFACT_KINDS
    files: tuple[re.Pattern[str], ...] = ()  # each matches a whole file name
    directories: tuple[re.Pattern[str], ...] = ()  # each matches a whole directory name
    confirm: str = ""  # one of CONFIRMATIONS, or "": the file sensor does not look for it
    label: str = ""  # one of LABELS, with confirm
    members: tuple[str, ...] = ()  # files saved with it (in a checkpoint directory, beside an adapter)


@dataclass(frozen=True)
class ScriptHint:
    id: str
    name: str
    source: str
    patterns: tuple[re.Pattern[str], ...]


class TrainingCatalog:
    """The loaded catalog and its combined name patterns. Read-only; safe to share between threads."""

    def __init__(
        self,
        tools: tuple[TrainingTool, ...],
        artifacts: tuple[TrainingArtifact, ...],
        script_hints: tuple[ScriptHint, ...] = (),
        path: str = "",
    ) -> None:
        self.tools = tools
        self.artifacts = artifacts
        self.script_hints = script_hints
        self.path = path
        # One regex per kind of name, a group per entry: the first entry in the file that matches
        # is the alternative that matches first.
        self._files = _combined((i, p) for i, a in enumerate(artifacts) for p in a.files)
        self._dirs = _combined((i, p) for i, a in enumerate(artifacts) for p in a.directories)
        self._confirmable_files = _combined(
            (i, p) for i, a in enumerate(artifacts) if a.confirm for p in a.files
        )
        self._confirmable_dirs = _combined(
            (i, p) for i, a in enumerate(artifacts) if a.confirm for p in a.directories
        )
        self._hints = _combined(((i, p) for i, h in enumerate(script_hints) for p in h.patterns), search=True)

    def __repr__(self) -> str:
        return (
            f"TrainingCatalog({len(self.tools)} tools, {len(self.artifacts)} artifacts "
            f"from {self.path or '<memory>'})"
        )

    def artifact_kind(self, path: str) -> str | None:
        """What a written path is (ARTIFACT_KINDS), by its file name and the directories above it;
        None when no entry names it. The first entry that matches decides."""
        parts = path.split("/")
        if len(parts) < 2:
            return None  # no directory: not a path a process writes
        best = _index(self._files, parts[-1])
        for directory in parts[1:-1]:
            found = _index(self._dirs, directory)
            if found is not None and (best is None or found < best):
                best = found
        return self.artifacts[best].kind if best is not None else None

    def confirmable_file(self, name: str) -> TrainingArtifact | None:
        """The entry whose content check confirms a file of this name, or None."""
        found = _index(self._confirmable_files, name)
        return self.artifacts[found] if found is not None else None

    def confirmable_dir(self, name: str) -> TrainingArtifact | None:
        """The entry whose content check confirms a directory of this name, or None."""
        found = _index(self._confirmable_dirs, name)
        return self.artifacts[found] if found is not None else None

    def confirmed_by(self, confirm: str) -> tuple[TrainingArtifact, ...]:
        """The entries confirmed by one content check."""
        return tuple(a for a in self.artifacts if a.confirm == confirm)

    def script_hint(self, script: str) -> ScriptHint | None:
        """The hint a script's file name matches (train.py, run_clm.py), or None."""
        found = _index(self._hints, script, search=True)
        return self.script_hints[found] if found is not None else None

    def launchers(self) -> frozenset[str]:
        """Programs of the tools that run a script named in their arguments."""
        return frozenset(p for t in self.tools if t.launcher for p in t.programs)

    def launcher_value_options(self) -> frozenset[str]:
        return frozenset(o for t in self.tools if t.launcher for o in t.value_options)


def _combined(
    patterns: Iterable[tuple[int, re.Pattern[str]]], *, search: bool = False
) -> re.Pattern[str] | None:
    """One regex of `(index, pattern)` pairs, a named group per pattern: `g<index>_<n>`."""
    groups = [f"(?P<g{i}_{n}>{p.pattern})" for n, (i, p) in enumerate(patterns)]
    if not groups:
        return None
    flags = re.IGNORECASE if search else 0
    return re.compile("|".join(groups), flags)


def _index(combined: re.Pattern[str] | None, name: str, *, search: bool = False) -> int | None:
    """The entry index of the first pattern that matches the whole name (or, searching, a part)."""
    if combined is None:
        return None
    found = combined.search(name) if search else combined.fullmatch(name)
    if found is None or found.lastgroup is None:
        return None
    return int(found.lastgroup[1:].split("_", 1)[0])


# --- what the rest of the agent asks of the packaged catalog -------------------------------------


def artifact_kind(path: str) -> str | None:
    """What a written path is to fine-tuning detection (ARTIFACT_KINDS), or None."""
    return default_training_catalog().artifact_kind(path)


def is_training_file(name: str) -> bool:
    """A file name the file sensor should have confirmed as a training artifact."""
    return default_training_catalog().confirmable_file(name) is not None


def is_training_dir(name: str) -> bool:
    """A directory name the file sensor should have confirmed as a training checkpoint."""
    return default_training_catalog().confirmable_dir(name) is not None


# --- loading -------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def default_training_catalog() -> TrainingCatalog:
    """The packaged catalog, loaded once per process (there is no user's file to load instead)."""
    return parse_training_catalog(*source.read_catalog("training.toml"))


def parse_training_catalog(data: bytes | str, label: str = "<string>") -> TrainingCatalog:
    """Validate catalog TOML text; `label` names it in error messages."""
    doc = source.parse_catalog_toml(data, label, _TOP_KEYS)
    tools = source.catalog_entries(doc, "tool", label, _tool)
    artifacts = source.catalog_entries(doc, "artifact", label, _artifact)
    hints = source.catalog_entries(doc, "script_hint", label, _hint)
    return TrainingCatalog(tools, artifacts, hints, label)


def _tool(raw: Mapping[str, Any], number: int, label: str) -> TrainingTool:
    fail, strings = source.entry_strings(
        raw, number, label, known=_TOOL_KEYS, required=_REQUIRED, strings=_REQUIRED
    )
    lists = source.entry_lists(raw, _TOOL_LISTS, fail)
    if not (lists["programs"] or lists["modules"] or lists["options"]):
        raise fail("needs at least one of programs, modules, options")
    if lists["subcommands"] and not lists["programs"]:
        raise fail("subcommands need programs")
    launcher = source.entry_flag(raw, "launcher", False, fail)
    if lists["value_options"] and not launcher:
        raise fail("value_options are a launcher's")
    return TrainingTool(
        id=strings["id"],
        name=strings["name"],
        source=strings["source"],
        programs=tuple(p.lower() for p in lists["programs"]),
        subcommands=lists["subcommands"],
        modules=lists["modules"],
        options=lists["options"],
        strong=source.entry_flag(raw, "strong", True, fail),
        launcher=launcher,
        value_options=lists["value_options"],
    )


def _artifact(raw: Mapping[str, Any], number: int, label: str) -> TrainingArtifact:
    fail, strings = source.entry_strings(
        raw, number, label, known=_ARTIFACT_KEYS, required=(*_REQUIRED, "kind"), strings=_ARTIFACT_STRINGS
    )
    lists = source.entry_lists(raw, _ARTIFACT_LISTS, fail)
    files = source.entry_regexes(lists["files"], "files", fail)
    directories = source.entry_regexes(lists["directories"], "directories", fail)
    if not (files or directories):
        raise fail("needs files or directories")
    kind = strings["kind"]
    if kind not in ARTIFACT_KINDS:
        raise fail(f"kind {kind!r} is not one of {', '.join(sorted(ARTIFACT_KINDS))}")
    confirm, artifact_label = strings.get("confirm", ""), strings.get("label", "")
    if confirm and confirm not in CONFIRMATIONS:
        raise fail(f"confirm {confirm!r} is not one of {', '.join(sorted(CONFIRMATIONS))}")
    if bool(confirm) != bool(artifact_label):
        raise fail("confirm and label go together")
    if artifact_label and artifact_label not in LABELS:
        raise fail(f"label {artifact_label!r} is not one of {', '.join(sorted(LABELS))}")
    if confirm and ((files and directories) or (confirm in _DIRECTORY_CONFIRMATIONS) != bool(directories)):
        raise fail("a directory check confirms directories only, a file check files only")
    if lists["members"] and confirm not in _MEMBER_CONFIRMATIONS:
        raise fail(f"members go with confirm {' or '.join(sorted(_MEMBER_CONFIRMATIONS))}")
    return TrainingArtifact(
        id=strings["id"],
        name=strings["name"],
        source=strings["source"],
        kind=kind,
        files=files,
        directories=directories,
        confirm=confirm,
        label=artifact_label,
        members=lists["members"],
    )


def _hint(raw: Mapping[str, Any], number: int, label: str) -> ScriptHint:
    fail, strings = source.entry_strings(
        raw, number, label, known=_HINT_KEYS, required=_REQUIRED, strings=_REQUIRED
    )
    patterns = source.entry_regexes(
        source.entry_lists(raw, ("patterns",), fail)["patterns"], "patterns", fail, re.IGNORECASE
    )
    if not patterns:
        raise fail("needs patterns")
    return ScriptHint(strings["id"], strings["name"], strings["source"], patterns)

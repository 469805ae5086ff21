"""Command lines: what program an argv runs, through interpreters and launchers.

The one parser runtime matching (agent/catalog/runtimes.py), GPU-workload identity and
fine-tuning detection share: `python -u -m vllm.entrypoints...`, `uv run --with x serve.py`,
`sh -c "ollama serve"` and `torchrun --nproc_per_node 8 train.py` each name the program
that really runs. POSIX and Windows paths alike; nothing here reads the system.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from agent.catalog.training import default_training_catalog

__all__ = [
    "Program",
    "PythonTarget",
    "as_argv",
    "basename",
    "explicit_argv",
    "has_dir",
    "is_absolute",
    "is_interpreter",
    "is_python",
    "is_shell",
    "norm",
    "program",
    "python_target",
    "runs_programs",
]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_PYTHON_RE: Final = re.compile(r"(?:python|pythonw|pypy|py)(?:\d+(?:\.\d+)*)?[dmtw]?")
_JS: Final = frozenset({"node", "nodejs", "bun", "deno"})
_SHELLS: Final = frozenset({"sh", "bash", "zsh", "dash", "ksh", "fish"})
# Programs that run another program named in their arguments. They exec or spawn it, so the
# child is seen on its own too; here they only make the wrapper's own verdict right. The
# training launchers (torchrun, accelerate, deepspeed) come from agent/catalog/training.toml.
_LAUNCHERS: Final = _words(
    "uv uvx pipx poetry pdm hatch rye pixi conda mamba micromamba npx bunx pnpx env nohup"
)
_LAUNCHER_SUBCOMMANDS: Final = frozenset({"run", "exec", "tool", "x", "launch", "dlx"})
# Launcher options whose value is a separate argument (so the value is not the program).
_LAUNCHER_VALUE_OPTS: Final = _words(
    "--with --from --python -p --project --directory --package -n --name --prefix --env-file"
    " --extra --group --index-url -u -C --chdir"
)
_PY_VALUE_OPTS: Final = frozenset({"-W", "-X", "-Q"})
_PY_FLAGS_THEN_M: Final = re.compile(r"-[bBdEhiIOPqRsSuvx]*m(.*)")
_PY_FLAGS_THEN_C: Final = re.compile(r"-[bBdEhiIOPqRsSuvx]*c.*")
_JS_VALUE_OPTS: Final = frozenset({"-r", "--require", "--import", "--loader", "--experimental-loader"})
_JS_EVAL_OPTS: Final = frozenset({"-e", "--eval", "-p", "--print"})
_WINDOWS_ABS_RE: Final = re.compile(r"[A-Za-z]:[\\/]")


@lru_cache(maxsize=1)
def _launchers() -> tuple[frozenset[str], frozenset[str]]:
    """(launcher programs, their options that take a value): the general ones and the training
    catalog's (read on first use)."""
    training = default_training_catalog()
    return _LAUNCHERS | training.launchers(), _LAUNCHER_VALUE_OPTS | training.launcher_value_options()


# --- names ---------------------------------------------------------------------------------------


def norm(name: str) -> str:
    """Case-folded name without a Windows ".exe"."""
    n = name.strip().lower()
    return n[:-4] if n.endswith(".exe") else n


def basename(path: str) -> str:
    """Last component of a POSIX or Windows path."""
    path = path.rstrip("/\\")
    return path[max(path.rfind("/"), path.rfind("\\")) + 1 :]


def has_dir(path: str) -> bool:
    return "/" in path or "\\" in path


def is_absolute(path: str) -> bool:
    return path.startswith(("/", "\\")) or _WINDOWS_ABS_RE.match(path) is not None


def as_argv(cmdline: Sequence[str] | str) -> Sequence[str]:
    if isinstance(cmdline, str):  # a caller with a flat command line: best effort
        return cmdline.split()
    return cmdline


def is_python(name: str) -> bool:
    """A Python interpreter's name (normalised): python3.12, pythonw, pypy3, py."""
    return _PYTHON_RE.fullmatch(name) is not None


def is_shell(name: str) -> bool:
    """A shell's name (normalised): its `-c` argument is a whole command line."""
    return name in _SHELLS


def is_interpreter(name: str) -> bool:
    return name in _JS or name in _SHELLS or is_python(name)


def runs_programs(name: str) -> bool:
    """An interpreter or launcher: its own name says nothing, its arguments do."""
    return name in _launchers()[0] or is_interpreter(name)


# --- what runs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PythonTarget:
    """What Python's own options say it runs: a `-m` module, `-c` code, or the script at an index."""

    module: str | None = None
    code: bool = False
    script_index: int | None = None


def python_target(argv: Sequence[str], start: int = 1) -> PythonTarget:
    """Python's options from argv[start] on, up to the module, code or script they lead to."""
    n = len(argv)
    i = start
    while i < n:
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        flags_m = _PY_FLAGS_THEN_M.fullmatch(arg)
        if flags_m:
            module = flags_m.group(1) or (argv[i + 1] if i + 1 < n else "")
            return PythonTarget(module=module or None)
        if _PY_FLAGS_THEN_C.fullmatch(arg):
            return PythonTarget(code=True)  # code on the command line: no script
        if arg in _PY_VALUE_OPTS:
            i += 2
            continue
        if arg.startswith("-") and arg != "-":
            i += 1
            continue
        break
    return PythonTarget(script_index=i if i < n else None)


@dataclass(frozen=True)
class Program:
    """What an interpreter or launcher in argv runs: script names, a module, the script's index."""

    names: tuple[tuple[str, str], ...] = ()  # (normalised basename, interpreter)
    module: str | None = None
    script_index: int | None = None
    relative_script: bool = False


def program(argv: Sequence[str], start: int = 0, depth: int = 0) -> Program:
    """The script or module an interpreter (or launcher) at argv[start] runs."""
    if start >= len(argv) or depth > 3:
        return Program()
    interp = norm(basename(argv[start]))
    n = len(argv)
    i = start + 1
    launchers, launcher_value_opts = _launchers()
    if is_python(interp):
        target = python_target(argv, i)
        if target.script_index is None:
            return Program(module=target.module)
        i = target.script_index
    elif interp in _JS:
        while i < n:
            arg = argv[i]
            if arg in _JS_EVAL_OPTS:
                return Program()
            if arg in _JS_VALUE_OPTS:
                i += 2
            elif arg.startswith("-") or (interp != "node" and arg in ("run", "x")):
                i += 1
            else:
                break
    elif interp in _SHELLS:
        while i < n:
            arg = argv[i]
            if arg == "-c":
                # `sh -c "prog args"`: the first word of the command string is the program.
                words = argv[i + 1].split() if i + 1 < n else []
                if not words:
                    return Program()
                return Program(names=((norm(basename(words[0])), interp),))
            if arg.startswith("-"):
                i += 1
                continue
            break
    elif interp in launchers:
        while i < n:
            arg = argv[i]
            if arg in launcher_value_opts:
                i += 2
            elif arg.startswith("-") or arg in _LAUNCHER_SUBCOMMANDS or ("=" in arg and not has_dir(arg)):
                i += 1
            else:
                break
        if i >= n:
            return Program()
        inner = program(argv, i, depth + 1)
        # uvx open-webui@latest, pipx run vllm==0.9: the version pin is not part of the name.
        name = re.split(r"(?<=.)@|==", norm(basename(argv[i])), maxsplit=1)[0]
        return Program(
            names=((name, interp), *inner.names),
            module=inner.module,
            script_index=inner.script_index if inner.script_index is not None else i,
            relative_script=inner.relative_script or (has_dir(argv[i]) and not is_absolute(argv[i])),
        )
    else:
        return Program()
    if i >= n:
        return Program()
    script = argv[i]
    return Program(
        names=((norm(basename(script)), interp),),
        script_index=i,
        relative_script=not is_absolute(script),
    )


def explicit_argv(exe: str, argv: Sequence[str], cwd: str | None, runs: Program | None) -> Sequence[str]:
    """argv with the interpreter's path and a relative script's path made explicit (what the
    runtime catalog's patterns read): `python server.py` run from a venv names the project."""
    if not argv:
        return [exe] if exe else []
    if runs is None:
        return argv
    tokens = list(argv)
    if exe and not has_dir(argv[0]) and has_dir(exe) and is_interpreter(norm(basename(argv[0]))):
        tokens[0] = exe
    i = runs.script_index
    if cwd and i is not None and runs.relative_script:
        script = argv[i]
        for prefix in ("./", ".\\"):
            if script.startswith(prefix):
                script = script[len(prefix) :]
        sep = "\\" if "\\" in cwd and "/" not in cwd else "/"
        tokens[i] = cwd.rstrip("/\\") + sep + script
    return tokens

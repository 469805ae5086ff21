"""Where the collector's options come from besides the command line: a config file and the environment.

Precedence, highest first: a flag on the command line, then an environment variable
(`UMBRA_COLLECTOR_<OPTION>`: `--silent-after` is `UMBRA_COLLECTOR_SILENT_AFTER`), then the config file
(`--config FILE`, else `UMBRA_COLLECTOR_CONFIG`, else /etc/umbra/collector.toml when it exists), then
the built-in default. The file is TOML whose keys are `serve`'s long option names (`db = "..."`,
`silent-after = "300s"`, `tls-name = ["a", "b"]`, `insecure = false`); a command takes the keys it has
an option for (`db` serves every command). Values go through the same checks as flags, and a bad
one is an error that names where it came from. An unknown key or variable is refused, so a typo
cannot leave a setting at its default unnoticed.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .common import UsageError

DEFAULT_CONFIG = Path("/etc/umbra/collector.toml")
ENV_PREFIX = "UMBRA_COLLECTOR_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield from _subparsers(child)


def _options(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    """(long name without dashes, action) of the settable options of every command."""
    for sub in _subparsers(parser):
        for action in sub._actions:
            if action.help == argparse.SUPPRESS or action.dest in ("help", "config", "version"):
                continue
            for option in action.option_strings:
                if option.startswith("--"):
                    yield option[2:], action


def settable(parser: argparse.ArgumentParser) -> list[str]:
    """The keys a config file may hold: the options of `serve`."""
    actions = parser._actions
    sub = next(a for a in actions if isinstance(a, argparse._SubParsersAction))
    return sorted({name for name, _ in _options(sub.choices["serve"])})


def config_path(
    argv: Sequence[str], environ: Mapping[str, str], default: Path = DEFAULT_CONFIG
) -> Path | None:
    """The config file to read, and whether it must exist (named) or is only used when there."""
    for i, token in enumerate(argv):
        if token == "--config" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if token.startswith("--config="):
            return Path(token.split("=", 1)[1])
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    return default if default.is_file() else None


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"config {path} is not valid TOML: {exc}") from None


def _convert(action: argparse.Action, value: Any, where: str) -> Any:
    """A file or environment value, checked as the flag's own value would be."""
    if isinstance(action, argparse._StoreTrueAction):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise UsageError(f"{where}: expected true or false, got {value!r}")
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [v for v in str(value).split(",") if v.strip()]
        return [_one(action, item, where) for item in items]
    if isinstance(value, list | dict | bool):
        raise UsageError(f"{where}: expected a single value, got {value!r}")
    return _one(action, value, where)


def _one(action: argparse.Action, value: Any, where: str) -> Any:
    if isinstance(value, float | int) and not isinstance(value, bool) and action.type is not None:
        value = str(value)  # a TOML number: checked as the flag's text (a duration still needs its unit)
    if not isinstance(value, str):
        raise UsageError(f"{where}: expected a string, got {value!r}")
    text = value.strip()
    converted: Any = text
    if callable(action.type):
        try:
            converted = action.type(text)
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            raise UsageError(f"{where}: {exc}") from None
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise UsageError(f"{where}: {text!r} is not one of {choices}")
    return converted


def apply_settings(
    parser: argparse.ArgumentParser,
    argv: Sequence[str],
    environ: Mapping[str, str],
    default_config: Path = DEFAULT_CONFIG,
) -> Path | None:
    """Make the config file's and the environment's values the defaults of the matching options
    (so a flag still wins). Returns the config file used, if any; UsageError names a bad value."""
    by_name: dict[str, list[argparse.Action]] = {}
    for name, action in _options(parser):
        by_name.setdefault(name, []).append(action)
    known = settable(parser)
    values: dict[str, tuple[Any, str]] = {}
    path = config_path(argv, environ, default_config)
    if path is not None:
        for key, value in _read(path).items():
            if key not in known:
                raise UsageError(f"config {path}: unknown key {key!r} (known: {', '.join(known)})")
            values[key] = (value, f"config {path}: {key}")
    for variable, value in environ.items():
        if not variable.startswith(ENV_PREFIX) or variable == CONFIG_ENV:
            continue
        key = variable[len(ENV_PREFIX) :].lower().replace("_", "-")
        if key not in known:
            names = ", ".join(ENV_PREFIX + k.upper().replace("-", "_") for k in known)
            raise UsageError(f"unknown environment variable {variable} (known: {CONFIG_ENV}, {names})")
        values[key] = (value, variable)
    for key, (value, where) in values.items():
        for action in by_name[key]:
            action.default = _convert(action, value, where)
    return path

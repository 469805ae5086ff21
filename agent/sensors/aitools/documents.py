"""Configuration files read within a budget: JSON, JSON with comments, TOML, YAML.

Every file an MCP client keeps is read the same way: only a regular file (never a FIFO, a device
or a directory), at most `max_bytes`, parsed by its format, and no deeper than `max_depth`
levels. What cannot be read is a counted drop with its reason, never an exception: a hostile or
broken file in one home must not stop the inventory of the others.
"""

from __future__ import annotations

import functools
import json
import os
import stat
import tomllib
from collections import Counter
from typing import Any

#: Reasons a file is dropped (the keys of `Reader.drops`).
DROP_REASONS = ("unreadable", "not_regular", "too_large", "malformed", "too_deep", "budget")


class Reader:
    """Reads configuration documents for one pass: `max_files` per pass, `max_bytes` per file."""

    def __init__(self, max_files: int, max_bytes: int, max_depth: int = 32) -> None:
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.drops: Counter[str] = Counter()  # since start
        self.pass_drops: Counter[str] = Counter()  # in the pass under way, or the last one
        self.read = 0  # files read this pass

    def new_pass(self) -> None:
        self.read = 0
        self.pass_drops = Counter()

    def drop(self, reason: str) -> None:
        self.drops[reason] += 1
        self.pass_drops[reason] += 1

    def raw(self, path: str) -> bytes | None:
        """The bytes of a regular file, within the budgets; None (counted) otherwise, and None
        without a count when there is no such file."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError:  # a symlink loop, a component we may not search
            self.drop("unreadable")
            return None
        if not stat.S_ISREG(st.st_mode):
            self.drop("not_regular")
            return None
        if st.st_size > self.max_bytes:
            self.drop("too_large")
            return None
        if self.read >= self.max_files:
            self.drop("budget")
            return None
        self.read += 1
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
            with os.fdopen(fd, "rb") as f:
                data = f.read(self.max_bytes + 1)
        except OSError:
            self.drop("unreadable")
            return None
        if len(data) > self.max_bytes:  # grew since the stat
            self.drop("too_large")
            return None
        return data

    def document(self, path: str, fmt: str) -> Any:
        """The parsed document (None when absent or dropped)."""
        data = self.raw(path)
        if data is None:
            return None
        try:
            text = data.decode("utf-8-sig")
            if fmt == "json":
                doc: Any = json.loads(text)
            elif fmt == "jsonc":
                doc = json.loads(strip_jsonc(text))
            elif fmt == "toml":
                doc = tomllib.loads(text)
            else:
                doc = _load_yaml(text)
        except RecursionError:
            self.drop("too_deep")
            return None
        except ValueError:  # JSONDecodeError, TOMLDecodeError, UnicodeDecodeError, bad YAML
            self.drop("malformed")
            return None
        if depth_over(doc, self.max_depth):
            self.drop("too_deep")
            return None
        return doc


@functools.cache
def _yaml_loader() -> Any:
    """PyYAML's SafeLoader without aliases: a "billion laughs" document of nested aliases is
    refused. PyYAML is imported on the first YAML document (a host with none keeps its half MiB)."""
    import yaml

    class SafeLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                raise yaml.YAMLError("aliases are not accepted")
            return super().compose_node(parent, index)

    return SafeLoader


def _load_yaml(text: str) -> Any:
    """The YAML document; ValueError when it is not valid (or uses aliases)."""
    import yaml

    try:
        return yaml.load(text, Loader=_yaml_loader())
    except yaml.YAMLError as exc:
        raise ValueError(f"YAML: {exc}") from None


def depth_over(doc: Any, limit: int) -> bool:
    """True when the document nests deeper than `limit` (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(doc, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return False


def strip_jsonc(text: str) -> str:
    """JSON with comments (// and /* */) and trailing commas, as VS Code and Zed write it, made JSON.
    Strings are kept as they are (a "//" inside a URL is not a comment)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        elif c == ",":
            j = i + 1
            while j < n and text[j] in " \t\r\n":
                j += 1
            if j < n and text[j] in "]}":
                i += 1  # a trailing comma
                continue
            out.append(c)
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)

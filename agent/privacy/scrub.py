"""Secrets and prompts out of command lines, URLs and free text, on the host.

What a secret looks like is data (agent/catalog/secrets.toml, with a source for each rule, plus
the agent config's [privacy] additions); this module applies it. Everything it finds is
replaced by one marker, `MARKER`, so a reader sees that something was there and never what:

- the value of a secret-bearing option (`--api-key`, `--token`, `--password`, `--hf-token`, and
  per runtime `-p`/`--prompt` for llama.cpp-style runtimes), as `--opt value` and `--opt=value`;
- prompts passed as positional arguments (`ollama run MODEL PROMPT`);
- `KEY=value` arguments, `--name=value` options and URL query parameters whose name looks
  secret (OPENAI_API_KEY, HF_TOKEN, db.password, ?api_key=, X-Amz-Signature);
- credentials by their shape wherever they are: the userinfo of a URL or connection string
  (postgresql://user:pass@host keeps scheme, host and port), Bearer and Authorization values,
  well-known key prefixes (sk-, hf_, ghp_, AKIA, xox., glpat- ...), JWTs, private-key blocks.

The process facts builder (agent/sensors/process/facts.py) scrubs every command line as it
reads it, so no detector, evidence, summary, spool row or wire message ever holds the raw one;
agent/privacy/logs.py puts `scrub_text` on every log line.

Every rule's quantifiers are bounded, so a hostile argument of any length costs linear time.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable, Sequence
from typing import Final
from urllib.parse import unquote_plus, urlsplit

from agent.catalog.cmdline import basename, is_shell, norm, program, runs_programs
from agent.catalog.secrets import (
    PositionalRule,
    SecretRules,
    default_secret_rules,
    extra_rules,
    option_key,
)
from agent.catalog.source import CatalogError

__all__ = [
    "MARKER",
    "CatalogError",
    "Scrubber",
    "active",
    "configure",
    "scrub_argv",
    "scrub_text",
    "scrub_url",
]

#: What replaces every secret and prompt.
MARKER: Final = "<redacted>"

#: argv -> the runtime catalog ids it runs (the runtime catalog's verdict).
RuntimesOf = Callable[[Sequence[str]], Iterable[str]]

# name=value / name: value / "name": "value" in free text. The name starts a word (or follows
# "-", so --api-key=... in a log line counts); the value is quoted, or runs to a separator. Two
# patterns, so that a name that is not secret (https: in a URL) does not swallow what follows.
_NAME_SEP: Final = re.compile(
    r"""(?<![A-Za-z0-9_.])(?P<q>["']?)(?P<key>[A-Za-z_][A-Za-z0-9_.-]{0,63})(?P=q)[ \t]{0,4}[=:][ \t]{0,4}"""
)
_VALUE: Final = re.compile(r""""[^"\n]{0,4096}"|'[^'\n]{0,4096}'|[^\s&;,'"<>]{1,4096}""")
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,127}")
_SHELL_C: Final = re.compile(r"-[A-Za-z]*c[A-Za-z]*")
_CACHE_SIZE: Final = 4096  # entries in each of a scrubber's answer caches (dropped whole when full)
_CACHED_CHARS: Final = 256  # strings longer than this are scrubbed every time, never kept
_MAX_DEPTH: Final = 3  # sh -c "uv run sh -c '...'": nesting this deep is hostile, not a workstation


def _catalog_runtimes(argv: Sequence[str]) -> list[str]:
    """The runtime catalog's ids for argv (imported on first use: the catalog is the process sensor's)."""
    from agent.catalog.runtimes import default_runtime_catalog

    return [m.entry.id for m in default_runtime_catalog().match("", "", argv)]


class Scrubber:
    """The rules, indexed for the per-argument hot path. The rules never change once built and the
    caches are memos (a lost race recomputes), so one scrubber serves every sensor thread."""

    def __init__(self, rules: SecretRules, runtimes_of: RuntimesOf | None = None) -> None:
        self.rules = rules
        self._runtimes_of = runtimes_of or _catalog_runtimes
        general: set[str] = set()
        self._glued_general: set[str] = set()
        self._by_runtime: dict[str, set[str]] = {}
        self._by_program: dict[str, set[str]] = {}
        self._glued: dict[str, set[str]] = {}  # runtime id or program name -> glued short options
        for rule in rules.options:
            if rule.general:
                general |= rule.options
                if rule.glued:
                    self._glued_general |= rule.options
            for scope, table in ((rule.runtimes, self._by_runtime), (rule.programs, self._by_program)):
                for name in scope:
                    table.setdefault(name, set()).update(rule.options)
                    if rule.glued:
                        self._glued.setdefault(name, set()).update(rule.options)
        self._general = frozenset(general)
        self._key_names = rules.key_names
        self._values = tuple(rule.pattern for rule in rules.values)
        # Answers for short strings: option names and arguments repeat from process to process.
        self._names: dict[str, bool] = {}
        self._texts: dict[str, str] = {}

    # --- free text and URLs ------------------------------------------------------------------

    def secret_name(self, name: str) -> bool:
        """Whether a KEY of KEY=value, an option's name or a query parameter names a secret."""
        known = self._names.get(name)
        if known is None:
            lowered = name.lower().lstrip("-")
            known = any(p.search(lowered) for p in self._key_names)
            if len(self._names) >= _CACHE_SIZE:
                self._names.clear()
            self._names[name] = known
        return known

    def text(self, s: str) -> str:
        """`s` with every secret form and every secret-named value replaced by MARKER."""
        if not s:
            return s
        short = len(s) <= _CACHED_CHARS
        if short and (known := self._texts.get(s)) is not None:
            return known
        out = s
        for pattern in self._values:
            out = pattern.sub(_replace, out)
        if "=" in out or ":" in out:
            out = self._named_values(out)
        if short:
            if len(self._texts) >= _CACHE_SIZE:
                self._texts.clear()
            self._texts[s] = out
        return out

    def _named_values(self, s: str) -> str:
        """Values whose name looks secret (password=..., "api_key": "...") replaced."""
        pieces: list[str] = []
        pos = done = 0
        while (m := _NAME_SEP.search(s, pos)) is not None:
            pos = m.end()
            if not self.secret_name(m.group("key")):
                continue
            value = _VALUE.match(s, pos)
            if value is None:
                continue
            quote = value.group(0)[0] if value.group(0)[:1] in ("'", '"') else ""
            pieces += [s[done:pos], quote, MARKER, quote]
            pos = done = value.end()
        return "".join(pieces) + s[done:] if pieces else s

    def url(self, url: str) -> str:
        """A URL with its userinfo, secret-named query (and fragment) parameters and secret-shaped
        path tokens replaced; scheme, host and port stay."""
        try:
            parts = urlsplit(url)
        except ValueError:  # a malformed IPv6 host: still text
            return self.text(url)
        if not parts.scheme or not parts.netloc:
            return self.text(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = MARKER + "@" + netloc.rpartition("@")[2]
        out = self.text(f"{parts.scheme}://{netloc}{parts.path}")  # a webhook's path is its secret
        before_fragment = url.split("#", 1)[0]
        if "?" in before_fragment:
            out += "?" + self._params(parts.query)
        if "#" in url:
            out += "#" + self._params(parts.fragment)
        return out

    def _params(self, query: str) -> str:
        pairs = []
        for pair in query.split("&"):
            name, eq, _ = pair.partition("=")
            if eq and self.secret_name(unquote_plus(name)):
                pairs.append(f"{name}={MARKER}")
            else:
                pairs.append(self.text(pair))
        return "&".join(pairs)

    # --- command lines -----------------------------------------------------------------------

    def argv(self, argv: Sequence[str], runtime_id: str | None = None, *, _depth: int = 0) -> list[str]:
        """argv with secrets and prompts replaced, argument for argument (same length).

        `runtime_id`: the runtime catalog id whose rules apply as well as the general ones;
        None: whichever runtimes the runtime catalog recognises in argv.
        """
        args = list(argv)
        if not args:
            return args
        if len(args) == 1 and " " in args[0] and _depth < _MAX_DEPTH:
            # A process that rewrote its argv as one string (setproctitle): read it as words.
            words = args[0].split(" ")
            scrubbed = self.argv(words, runtime_id, _depth=_depth + 1)
            return [args[0] if scrubbed == words else " ".join(scrubbed)]
        first = norm(basename(args[0]))
        programs = {first}
        if runs_programs(first):
            programs.update(name for name, _ in program(args).names)
        runtimes = {runtime_id} if runtime_id is not None else set(self._runtimes_of(args))
        options = set(self._general)
        glued = set(self._glued_general)
        for name in (*runtimes, *programs):
            options |= self._by_runtime.get(name, set()) | self._by_program.get(name, set())
            glued |= self._glued.get(name, set())
        out = [self.text(args[0])]
        pending = False  # the previous argument was a secret-bearing option: this is its value
        command_next = False  # the previous argument was a shell's -c: this is a command line
        for arg in args[1:]:
            if pending:
                out.append(MARKER)
                pending = False
            elif command_next:
                out.append(self._command(arg, _depth))
                command_next = False
            elif arg.startswith("-") and len(arg) > 1 and arg != "--":
                name, eq, _ = arg.partition("=")
                key = option_key(name)
                if key in options:
                    if eq:
                        out.append(f"{name}={MARKER}")
                    else:
                        out.append(arg)
                        pending = True
                elif eq and self.secret_name(name):
                    out.append(f"{name}={MARKER}")
                elif not arg.startswith("--") and len(arg) > 2 and arg[:2] in glued:
                    out.append(arg[:2] + MARKER)  # mysql -pSECRET
                else:
                    out.append(self.text(arg))
                    command_next = is_shell(first) and _SHELL_C.fullmatch(arg) is not None
            else:
                key, eq, _ = arg.partition("=")
                if eq and _ENV_NAME.fullmatch(key) and self.secret_name(key):
                    out.append(f"{key}={MARKER}")  # env OPENAI_API_KEY=... cmd
                else:
                    out.append(self.text(arg))
        for rule in self.rules.positional:
            if rule.runtime in runtimes and (not rule.programs or programs & set(rule.programs)):
                for i in _prompt_positions(args, rule):
                    out[i] = MARKER
        return out

    def _command(self, command: str, depth: int) -> str:
        """A shell's -c command line: its words scrubbed as a command's argv when anything in it is
        secret (re-quoted then), else the string as it was."""
        if depth >= _MAX_DEPTH:
            return self.text(command)
        try:
            words = shlex.split(command)
        except ValueError:  # unbalanced quotes: words as the eye sees them
            words = command.split()
        scrubbed = self.argv(words, _depth=depth + 1)
        return self.text(command) if scrubbed == words else shlex.join(scrubbed)


def _replace(m: re.Match[str]) -> str:
    """A value rule's match: only its `secret` group goes when it has one, else all of it."""
    if "secret" in m.re.groupindex and m.group("secret") is not None:
        start, end = m.start("secret") - m.start(0), m.end("secret") - m.start(0)
        whole = m.group(0)
        return whole[:start] + MARKER + whole[end:]
    return MARKER


def _prompt_positions(argv: Sequence[str], rule: PositionalRule) -> list[int]:
    """Indexes of the positional arguments that are a prompt under `rule`."""
    i = 1
    if rule.subcommand:
        while i < len(argv) and argv[i].startswith("-"):
            i += 1
        if i >= len(argv) or argv[i] != rule.subcommand:
            return []
        i += 1
    positional = [j for j in range(i, len(argv)) if not (argv[j].startswith("-") and len(argv[j]) > 1)]
    return positional[rule.keep :]


# --- the agent's scrubber ------------------------------------------------------------------------

_active: Scrubber | None = None


def active() -> Scrubber:
    """The scrubber in force: the packaged catalog, plus the config's additions once `configure`d."""
    global _active
    if _active is None:
        _active = Scrubber(default_secret_rules())
    return _active


def configure(
    secret_options: Iterable[str] = (),
    key_patterns: Iterable[str] = (),
    value_patterns: Iterable[str] = (),
    *,
    where: str = "[privacy]",
) -> Scrubber:
    """Put the packaged rules plus these additions in force (the agent config's [privacy] section).
    Raises CatalogError naming `where` and the bad item; the rules in force are then unchanged."""
    global _active
    extra = extra_rules(secret_options, key_patterns, value_patterns, where)
    _active = Scrubber(default_secret_rules().merged(extra))
    return _active


def scrub_argv(argv: Sequence[str], runtime_id: str | None = None) -> list[str]:
    """argv with secret option values, secret KEY=value arguments, secret forms and prompts
    replaced by MARKER (same length). `runtime_id` adds that runtime's rules (None: the runtimes
    the runtime catalog recognises in argv)."""
    return active().argv(argv, runtime_id)


def scrub_url(url: str) -> str:
    """The URL with credentials (userinfo, secret-named parameters, secret path tokens) replaced;
    scheme, host and port kept. Not a URL: scrubbed as text."""
    return active().url(url)


def scrub_text(s: str) -> str:
    """A log line or any free string with every secret form and secret-named value replaced."""
    return active().text(s)

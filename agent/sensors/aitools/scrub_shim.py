"""A stand-in for agent/privacy/scrub.py (written on another branch), with its API: removed once
that module is merged. Redacts credentials in command lines, URLs and free text."""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

REDACTED = "[REDACTED]"
_SECRET_NAME = re.compile(
    r"(pass(word|wd)?|secret|token|api[-_]?key|apikey|auth|credential|private[-_]?key|pat)$", re.I
)
_TOKEN = re.compile(
    r"(sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_-]{30,}|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{5,}"
    r"|(?<![A-Za-z0-9])[A-Fa-f0-9]{32,}(?![A-Za-z0-9]))"
)
_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s\"']+", re.I)


def scrub_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = "&".join(
        f"{k}={REDACTED}" if v else k for k, _, v in (p.partition("=") for p in parts.query.split("&") if p)
    )
    path = _TOKEN.sub(REDACTED, parts.path)
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def scrub_text(text: str) -> str:
    return _TOKEN.sub(REDACTED, _URL.sub(lambda m: scrub_url(m.group(0)), text))


def scrub_argv(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    secret_next = False
    for arg in argv:
        if secret_next:
            out.append(REDACTED)
            secret_next = False
            continue
        name, eq, _ = arg.partition("=")
        if eq and _SECRET_NAME.search(name.lstrip("-")):
            out.append(f"{name}={REDACTED}")
            continue
        if arg.startswith("-") and not eq and _SECRET_NAME.search(arg.lstrip("-")):
            secret_next = True
        out.append(scrub_text(arg))
    return out

"""Log lines pass through the same scrubber as process facts before they are written.

Process facts are clean at the source (agent/sensors/process/facts.py), but a log line can
quote anything: an exception's message, a URL a library logged, a collector address with
credentials. The formatter is the last point every record crosses, tracebacks included.
"""

from __future__ import annotations

import logging

from agent.privacy.scrub import scrub_text

__all__ = ["ScrubbingFormatter", "scrub_logs"]


class ScrubbingFormatter(logging.Formatter):
    """Formats as `inner` does, then scrubs the whole text (message, arguments, traceback)."""

    def __init__(self, inner: logging.Formatter | None = None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return scrub_text(self.inner.format(record))


def scrub_logs(logger: logging.Logger | None = None) -> None:
    """Put the scrubber in front of every handler of `logger` (the root logger by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not isinstance(handler.formatter, ScrubbingFormatter):
            handler.setFormatter(ScrubbingFormatter(handler.formatter))

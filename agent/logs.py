"""The agent's log lines on stderr: text for people, or one JSON object a line for journald and
log shippers (`[agent] log_format = "json"`). Applied again when SIGHUP reloads the config.
Either way every line passes the privacy scrubber (agent/privacy): a log line can quote anything."""

from __future__ import annotations

import json
import logging
import sys
import time

from agent.privacy.logs import ScrubbingFormatter
from agent.privacy.scrub import scrub_text

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLines(logging.Formatter):
    """{"time", "level", "logger", "message"} and, for an exception, its type and traceback."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": scrub_text(record.getMessage()),
            "pid": record.process,
        }
        if record.exc_info and record.exc_info[0] is not None:
            doc["error"] = record.exc_info[0].__name__
            doc["traceback"] = scrub_text(self.formatException(record.exc_info))
        return json.dumps(doc, ensure_ascii=False)


def configure_logging(level: str, fmt: str) -> None:
    """One stderr handler on the root logger, replacing any earlier one (a reload)."""
    handler = logging.StreamHandler(sys.stderr)
    # JSON scrubs field by field, so a marker never breaks the document's quoting
    handler.setFormatter(JsonLines() if fmt == "json" else ScrubbingFormatter(logging.Formatter(TEXT_FORMAT)))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())

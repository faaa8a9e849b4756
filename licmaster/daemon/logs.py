"""One line per event, structured: `key=value` (default) or JSON (`log_format = "json"`)."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

log = logging.getLogger("licmaster")


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event with its fields; formatting happens only if the level is enabled."""
    if log.isEnabledFor(level):
        log.log(level, name, extra={"fields": fields})


def escape(text: str) -> str:
    """A value as one token of a key=value line: quoted (JSON) when it holds a space, `=`, a
    quote, a backslash or anything unprintable, so no value can split a line or forge a key."""
    if text and text.isprintable() and not any(c in text for c in ' ="\\'):
        return text
    return json.dumps(text)


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        parts = [f"ts={ts}", f"level={record.levelname.lower()}", f"event={record.getMessage()}"]
        for key, value in getattr(record, "fields", {}).items():
            parts.append(f"{key}={escape(str(value))}")
        if record.exc_info:
            parts.append(f"exc={json.dumps(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": record.created, "level": record.levelname.lower(), "event": record.getMessage()}
        doc.update(getattr(record, "fields", {}))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup(fmt: str = "kv", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False

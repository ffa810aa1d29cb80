"""Structured events on stderr, as text or one JSON object a line, with secrets masked."""

from __future__ import annotations

import datetime
import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

# env.py runs logging.config.fileConfig() on every Alembic command; the runner points
# it at this file so Alembic's own lines come out through the runner's format too.
ALEMBIC_LOGGING_INI = Path(__file__).with_name("alembic_logging.ini")

_MASK = "***"


class EventLog:
    """Writes events as `text` or `json` lines to one stream, masking registered secrets."""

    def __init__(self, fmt: str = "text", stream: TextIO | None = None) -> None:
        self.format = fmt
        self.stream = stream
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add_secret(self, secret: str | None) -> None:
        """Mask `secret` wherever it would appear in a later event."""
        if secret:
            self._secrets.add(secret)

    def mask(self, text: str) -> str:
        """Return `text` with every registered secret replaced by ***."""
        for secret in self._secrets:
            text = text.replace(secret, _MASK)
        return text

    def emit(self, event: str, message: str, level: str = "info", **fields: Any) -> None:
        """Write one event line."""
        now = datetime.datetime.now(datetime.UTC)
        if self.format == "json":
            record = {
                "ts": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "level": level,
                "event": event,
                "message": message,
                **fields,
            }
            line = json.dumps(record, default=str)
        else:
            extra = " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())
            stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
            line = f"{stamp} {level.upper():<7} {event}: {message}"
            if extra:
                line += f" [{extra}]"
        with self._lock:
            stream = self.stream or sys.stderr
            stream.write(self.mask(line) + "\n")
            stream.flush()


def _text_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


events = EventLog()
"""The process's event log; the CLI sets its format once at start-up."""


def emit(event: str, message: str, level: str = "info", **fields: Any) -> None:
    """Write one event to the process's event log."""
    events.emit(event, message, level, **fields)


class AlembicLogHandler(logging.Handler):
    """Forwards Alembic's and SQLAlchemy's log records as `alembic` events."""

    def emit(self, record: logging.LogRecord) -> None:
        events.emit("alembic", record.getMessage(), record.levelname.lower(), logger=record.name)

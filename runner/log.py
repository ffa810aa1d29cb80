"""Structured events on stderr, as text or one JSON object a line, with secrets masked."""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import logging
import re
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, TextIO

from runner.urls import written_password

# env.py runs logging.config.fileConfig() on every Alembic command; the runner points
# it at this file so Alembic's own lines come out through the runner's format too.
ALEMBIC_LOGGING_INI = Path(__file__).with_name("alembic_logging.ini")

_MASK = "***"

# A URL's password in any text, a traceback's included: from the ':' after the user to
# the last '@' of the word, so that an unencoded '@' in the password is covered too.
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^:/@\s'\"]*:)[^\s'\"]*@")


class EventLog:
    """Writes events as `text` or `json` lines to one stream, masking registered secrets."""

    def __init__(self, fmt: str = "text", stream: TextIO | None = None) -> None:
        self.format = fmt
        self.stream = stream
        self._secrets: set[str] = set()
        self._tails: set[str] = set()
        self._lock = threading.Lock()
        self.last_event: tuple[str, str] | None = None
        """The latest event and its message, which decided the outcome when the process ends."""
        self.latest_fields: dict[str, Any] = {}
        """Each field's value in the latest event that carried it (`revisions`, `holder`, ...)."""
        self.latest_messages: dict[str, str] = {}
        """Each event's latest message (the last `migrate.progress` reading, say)."""

    def add_secret(self, secret: str | None) -> None:
        """Mask `secret` wherever it would appear in a later event."""
        if secret:
            self._secrets.add(secret)

    def add_url_secret(self, url: str | None) -> None:
        """Mask a URL's password in every form it may take: as written, decoded, encoded.

        The password is everything between the first ':' after '://' and the last '@',
        so that an unencoded '@', ':' or '/' in it cannot cut it short, and a URL that does
        not parse at all is masked too.
        """
        written = written_password(url or "")
        if not written:
            return
        decoded = urllib.parse.unquote(written)
        # A parser that chokes mid-password quotes the rest of it up to the host.
        self._tails.update(written[start:] for start in range(1, len(written) - 2))
        for form in (written, decoded):
            # As written, percent-encoded, form-encoded, and as SQLAlchemy renders it.
            variants = [form, urllib.parse.quote(form, safe=""), urllib.parse.quote_plus(form),
                        urllib.parse.quote(form, safe=" +")]
            for variant in variants:
                self.add_secret(variant)
                # configparser's escaping, as Flask-Migrate's env.py writes the URL.
                self.add_secret(variant.replace("%", "%%"))

    def mask(self, text: str) -> str:
        """Return `text` with every registered secret replaced by ***."""
        # Longest first, so that no part of a longer form is left after a shorter one.
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, _MASK)
        for tail in sorted(self._tails, key=len, reverse=True):
            text = text.replace(f"{tail}@", f"{_MASK}@")
        return _URL_PASSWORD.sub(rf"\g<1>{_MASK}@", text)

    def emit(self, event: str, message: str, level: str = "info", **fields: Any) -> None:
        """Write one event line."""
        # Before serializing: JSON escaping could otherwise change a secret's spelling.
        message = self.mask(message)
        fields = {key: _masked(self, value) for key, value in fields.items()}
        self.last_event = (event, message)
        self.latest_messages[event] = message
        self.latest_fields.update(fields)
        line = format_event(self.format, event, message, level, **fields)
        with self._lock:
            stream = self.stream or sys.stderr
            stream.write(self.mask(line) + "\n")
            stream.flush()


def format_event(fmt: str, event: str, message: str, level: str = "info", **fields: Any) -> str:
    """One event as a `text` or `json` line (without the newline)."""
    now = datetime.datetime.now(datetime.UTC)
    if fmt == "json":
        record = {
            "ts": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": level,
            "event": event,
            "message": message,
            **fields,
        }
        return json.dumps(record, default=str)
    extra = " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    line = f"{stamp} {level.upper():<7} {event}: {message}"
    return f"{line} [{extra}]" if extra else line


def _masked(log: EventLog, value: Any) -> Any:
    if isinstance(value, str):
        return log.mask(value)
    if isinstance(value, list | tuple):
        return [_masked(log, item) for item in value]
    if isinstance(value, dict):
        return {key: _masked(log, item) for key, item in value.items()}
    return value


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


class AppOutput(io.TextIOBase):
    """A stream for what the app writes itself (prints, its own log handlers, warnings)
    while the runner runs: in JSON format each line becomes an `app.output` event, so that
    every line of the runner's output is one JSON object."""

    def __init__(self, log: EventLog) -> None:
        super().__init__()
        self.log = log
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            if line.strip():
                self.log.emit("app.output", line.rstrip())
        return len(text)

    def flush(self) -> None:
        if self._partial.strip():
            self.log.emit("app.output", self._partial.rstrip())
        self._partial = ""


@contextlib.contextmanager
def app_output_captured(log: EventLog) -> Iterator[None]:
    """Inside the block, stdout and stderr carry the app's output to `log`: as is in text
    format (to stderr), as `app.output` events in JSON; the log itself writes to the stderr
    of before the block."""
    real, saved = sys.stderr, log.stream
    log.stream = real
    target: Any = AppOutput(log) if log.format == "json" else real
    try:
        with contextlib.redirect_stdout(target), contextlib.redirect_stderr(target):
            yield
    finally:
        target.flush()
        log.stream = saved


class AppLogHandler(logging.Handler):
    """Forwards the app's own log records as `app.log` events (the console entry point's root)."""

    def emit(self, record: logging.LogRecord) -> None:
        fields: dict[str, Any] = {"logger": record.name}
        if record.exc_info:
            fields["error"] = logging.Formatter().formatException(record.exc_info)
        events.emit("app.log", record.getMessage(), record.levelname.lower(), **fields)


@contextlib.contextmanager
def preserved_logging() -> Iterator[None]:
    """Put every logger back as it was after the block, in which env.py runs fileConfig().

    fileConfig() replaces the root logger's handlers and disables the loggers it does not
    name: a host app that migrates in-process keeps its own logging.
    """
    manager = logging.Logger.manager
    before = {name for name, logger in manager.loggerDict.items()
              if isinstance(logger, logging.Logger)}
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in before)]
    saved = [(logger, logger.level, logger.disabled, logger.propagate, list(logger.handlers))
             for logger in loggers]
    try:
        yield
    finally:
        for logger, level, disabled, propagate, handlers in saved:
            logger.setLevel(level)
            logger.disabled, logger.propagate, logger.handlers = disabled, propagate, handlers
        for name, new in list(manager.loggerDict.items()):
            if isinstance(new, logging.Logger) and name not in before:
                new.setLevel(logging.NOTSET)
                new.disabled, new.propagate, new.handlers = False, True, []


class JsonEventFormatter(logging.Formatter):
    """Formats a log record as a runner event in JSON: `event` is the logger's name.

    gunicorn's logging config (runner/gunicorn_config.py) uses it, so that with
    RUNNER_LOG_FORMAT=json gunicorn's error and access lines are events too.
    """

    ACCESS_FIELDS: ClassVar[dict[str, str]] = {
        "h": "remote", "m": "method", "U": "path", "q": "query", "s": "status", "B": "bytes",
        "L": "duration",
    }
    """gunicorn's access log atoms kept as fields, by their names here."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {}
        if record.name == "gunicorn.access" and isinstance(record.args, dict):
            atoms: dict[str, Any] = record.args
            fields = {name: _number(atoms[atom]) if atom in "sBL" else atoms[atom]
                      for atom, name in self.ACCESS_FIELDS.items() if atom in atoms}
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        return format_event("json", record.name, record.getMessage(),
                            record.levelname.lower(), **fields)


def _number(value: Any) -> Any:
    """A numeric gunicorn atom ("200", "0.004") as a number; "-" and others as they are."""
    try:
        return float(value) if "." in str(value) else int(value)
    except (TypeError, ValueError):
        return value


def started_revisions(record: logging.LogRecord) -> tuple[str, ...]:
    """The revisions an upgrade step starts, from Alembic's 'Running upgrade ...' log record
    on `alembic.runtime.migration`; () for any other record."""
    step = record.args[0] if isinstance(record.args, tuple) and record.args else None
    if not getattr(step, "is_upgrade", False):
        return ()
    return tuple(getattr(step, "to_revisions", None) or ())


@contextlib.contextmanager
def recorded_steps() -> Iterator[list[str]]:
    """Collect the revision of each step Alembic starts, from its 'Running ...' log records."""
    steps: list[str] = []

    def record(record: logging.LogRecord) -> bool:
        steps.extend(started_revisions(record))
        return True

    # A filter, not a handler: env.py's fileConfig() strips this logger's handlers.
    logger = logging.getLogger("alembic.runtime.migration")
    logger.addFilter(record)
    try:
        yield steps
    finally:
        logger.removeFilter(record)

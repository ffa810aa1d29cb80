"""gunicorn's entry point: `gunicorn 'runner.wsgi:serve("myapp:create_app")'`.

Each worker loads the app exactly as `flask --app myapp:create_app` loads it
(flask.cli.ScriptInfo, FLASK_DEBUG included), from the environment the runner passed on
(.flaskenv/.env already in it), so the runner itself never needs to import the app to
serve it. An app that fails to load ends gunicorn with the runner's one-line error.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask


def serve(import_path: str | None = None) -> Flask:
    """The app FLASK_APP `import_path` names (None: wsgi.py or app.py, as flask finds it)."""
    from runner.app import load_flask_app
    from runner.errors import ConfigError

    _quiet_alembic_plugins()
    try:
        return load_flask_app(import_path)
    except ConfigError as error:
        from gunicorn.errors import AppImportError  # type: ignore[import-untyped]

        from runner.log import events, format_event

        events.add_url_secret(os.environ.get("DATABASE_URL"))
        line = format_event(os.environ.get("RUNNER_LOG_FORMAT", "text"), error.event,
                            error.message, "error", exit_code=int(error.exit_code))
        # gunicorn prints this one line, without a traceback, and stops (App failed to load).
        raise AppImportError(events.mask(line)) from None


class _DebugLevel(logging.Filter):
    """Alembic's plugins announcing themselves at INFO in every worker: DEBUG lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(record.levelno)


def _quiet_alembic_plugins() -> None:
    # On the logger that makes the records (a logger's filters do not see its children's).
    logging.getLogger("alembic.runtime.plugins").addFilter(_DebugLevel())

"""Hand the process over to gunicorn: after os.execvpe the runner's PID is gunicorn's."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import tenacity
from flask.cli import prepare_import

from runner import wait
from runner.errors import ConfigError, NotAtHead
from runner.log import emit
from runner.revisions import RevisionState, load_migrations, read_state
from runner.settings import Settings

MAX_POLL_INTERVAL = 1.0
"""The cap on the pause between two readings of the revisions, in seconds."""


def gunicorn_app_spec(app_path: str) -> str:
    """The `module:attr` gunicorn imports for a FLASK_APP import path (loaded already)."""
    parts = re.split(r":(?![\\/])", app_path, maxsplit=1)
    module_name = prepare_import(parts[0])
    if len(parts) == 2 and parts[1]:
        return f"{module_name}:{parts[1]}"
    # A bare module: look where `flask` looks, in the same order.
    module = sys.modules.get(module_name)
    for attr in ("app", "application"):
        if hasattr(module, attr):
            return f"{module_name}:{attr}"
    for factory in ("create_app", "make_app"):
        if hasattr(module, factory):
            return f"{module_name}:{factory}()"
    return module_name


def wait_for_head(
    settings: Settings, sleep: Callable[[float], None] = time.sleep
) -> RevisionState:
    """Wait for the database, then poll until it is at head; NotAtHead after the wait timeout."""
    started = time.monotonic()
    wait.wait_for_database(settings, sleep)
    timeout = max(0.0, settings.wait_timeout - (time.monotonic() - started))
    migrations = load_migrations(settings)

    def log_waiting(retry: tenacity.RetryCallState) -> None:
        if retry.attempt_number == 1 and retry.outcome is not None:
            state: RevisionState = retry.outcome.result()
            pending = ", ".join(script.revision for script in state.pending)
            emit("serve.waiting", f"waiting for the database to reach head {', '.join(state.heads)}"
                 f" ({len(state.pending)} pending: {pending}); another process migrates it",
                 current=list(state.current), heads=list(state.heads))

    try:
        state = tenacity.Retrying(
            stop=tenacity.stop_after_delay(timeout),
            wait=tenacity.wait_exponential_jitter(multiplier=0.1, max=MAX_POLL_INTERVAL),
            retry=tenacity.retry_if_result(lambda state: not state.at_head),
            before_sleep=log_waiting,
            sleep=sleep,
        )(read_state, settings, migrations)
    except tenacity.RetryError as timed_out:
        state = timed_out.last_attempt.result()
        raise NotAtHead(
            f"the database did not reach head {', '.join(state.heads)} within"
            f" {settings.wait_timeout:g}s"
            f" (it is at {', '.join(state.current) or 'base'}): is the migration Job or init"
            " container running? raise --wait-timeout/RUNNER_WAIT_TIMEOUT to wait longer",
            current=list(state.current), heads=list(state.heads),
        ) from None
    emit("serve.at_head", f"the database is at head {', '.join(state.heads)}",
         waited=round(time.monotonic() - started, 3))
    return state


def gunicorn_argv(settings: Settings) -> list[str]:
    """gunicorn's argv: the operator's options, then the app; the bind comes from PORT."""
    return ["gunicorn", *settings.gunicorn_args, gunicorn_app_spec(settings.app_path)]


def exec_gunicorn(settings: Settings) -> NoReturn:
    """Replace this process with gunicorn serving the app; returns only by raising."""
    argv = gunicorn_argv(settings)
    # The gunicorn beside this interpreter belongs to the same virtualenv as the app.
    beside = Path(sys.executable).with_name("gunicorn")
    executable = str(beside) if beside.is_file() else "gunicorn"
    with settings.app.app_context():
        for engine in settings.app.extensions["migrate"].db.engines.values():
            engine.dispose()
    emit("serve.exec", f"exec {' '.join(argv)}", argv=argv,
         port=settings.exec_environment.get("PORT"))
    try:
        os.execvpe(executable, argv, dict(settings.exec_environment))
    except OSError as exc:
        raise ConfigError(
            f"cannot exec gunicorn ({exc.strerror}): install gunicorn in the app's environment"
        ) from None

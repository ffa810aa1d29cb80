"""Hand the process over to gunicorn: after os.execvpe the runner's PID is gunicorn's."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import gunicorn.config  # type: ignore[import-untyped]
import tenacity

from runner import database, signals, wait
from runner.errors import ConfigError, NotAtHead
from runner.log import emit
from runner.revisions import RevisionState, load_migrations, read_state
from runner.settings import Settings

MAX_POLL_INTERVAL = 1.0
"""The cap on the pause between two readings of the revisions, in seconds (plus jitter)."""


def wait_for_head(
    settings: Settings, sleep: Callable[[float], None] = signals.sleep,
    default_answered: bool = False,
) -> RevisionState:
    """Wait for the database, then poll until it is at head; NotAtHead after the wait timeout.

    `default_answered`: as for wait.wait_for_database (the CLI waited before loading the app).
    """
    started = time.monotonic()
    wait.wait_for_database(settings, sleep, default_answered=default_answered)
    timeout = max(0.0, settings.wait_timeout - (time.monotonic() - started))
    migrations = load_migrations(settings)

    def log_waiting(retry: tenacity.RetryCallState) -> None:
        if retry.outcome is not None and retry.outcome.failed:
            wait.log_waiting(retry)
        elif retry.attempt_number == 1 and retry.outcome is not None:
            state: RevisionState = retry.outcome.result()
            pending = ", ".join(script.revision for script in state.pending)
            emit("serve.waiting", f"waiting for the database to reach head {', '.join(state.heads)}"
                 f" ({len(state.pending)} pending: {pending}); another process migrates it",
                 current=list(state.current), heads=list(state.heads))

    try:
        state = tenacity.Retrying(
            stop=tenacity.stop_after_delay(timeout),
            wait=tenacity.wait_exponential(multiplier=0.1, max=MAX_POLL_INTERVAL)
            + tenacity.wait_random(0, 0.1),
            # A restart or failover while we poll is waited out like a slow migration.
            retry=tenacity.retry_if_result(lambda state: not state.at_head)
            | tenacity.retry_if_exception(database.is_transient),
            before_sleep=log_waiting,
            sleep=sleep,
        )(read_state, settings, migrations)
    except tenacity.RetryError as timed_out:
        # The database's own error, when the last reading failed: exit 3 as for any wait.
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


DEFAULT_GUNICORN_CONFIG = "python:runner.gunicorn_config"
"""The config gunicorn gets when the app brings none (see runner/gunicorn_config.py)."""


def gunicorn_argv(settings: Settings) -> list[str]:
    """gunicorn's argv: the operator's options, then the app; the bind comes from PORT."""
    config = [] if has_gunicorn_config(settings) else ["-c", DEFAULT_GUNICORN_CONFIG]
    return ["gunicorn", *config, *settings.gunicorn_args, settings.gunicorn_app]


def has_gunicorn_config(settings: Settings) -> bool:
    """Whether gunicorn has a config of the app's: -c/--config given, or ./gunicorn.conf.py."""
    args = [*settings.gunicorn_args,
            *shlex.split(settings.exec_environment.get("GUNICORN_CMD_ARGS", ""))]
    return (any(arg.startswith(("-c", "--config")) for arg in args)
            or Path("gunicorn.conf.py").is_file())


def gunicorn_bind(settings: Settings) -> list[str]:
    """The addresses gunicorn will bind, as it decides: its flags, GUNICORN_CMD_ARGS, PORT."""
    parser = gunicorn.config.Config().parser()
    sources = [list(settings.gunicorn_args),
               shlex.split(settings.exec_environment.get("GUNICORN_CMD_ARGS", ""))]
    for args in sources:
        # Quiet: --help, --version or a bad flag are for gunicorn itself to answer.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                bind = parser.parse_known_args(args)[0].bind
            except SystemExit:
                continue
        if bind:
            return list(bind)
    port = settings.exec_environment.get("PORT")
    return [f"0.0.0.0:{port}"] if port else ["127.0.0.1:8000"]


def exec_gunicorn(settings: Settings) -> NoReturn:
    """Replace this process with gunicorn serving the app; returns only by raising."""
    argv = gunicorn_argv(settings)
    # The gunicorn beside this interpreter belongs to the same virtualenv as the app.
    beside = Path(sys.executable).with_name("gunicorn")
    executable = str(beside) if beside.is_file() else "gunicorn"
    with settings.app.app_context():
        for engine in settings.app.extensions["migrate"].db.engines.values():
            engine.dispose()
    bind = gunicorn_bind(settings)
    emit("serve.exec", f"exec {' '.join(argv)} (binding {', '.join(bind)})", argv=argv,
         bind=bind)
    try:
        # The default config formats gunicorn's logs as the runner's, flag or variable.
        os.execvpe(executable, argv,
                   {**settings.exec_environment, "RUNNER_LOG_FORMAT": settings.log_format})
    except OSError as exc:
        raise ConfigError(
            f"cannot exec gunicorn ({exc.strerror}): install gunicorn in the app's environment"
        ) from None

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
from runner.settings import DEFAULT_PORT, Settings

MAX_POLL_INTERVAL = 1.0
"""The cap on the pause between two readings of the revisions, in seconds (plus jitter)."""


def wait_for_head(settings: Settings, sleep: Callable[[float], None] = signals.sleep) -> None:
    """Wait for the database, then poll until it is at head (or ahead, where allowed);
    NotAtHead when the wait timeout (from the start) runs out. With a valid manifest, one
    query a poll on the runner's connection; else through the app's env.py."""
    from runner.history import Verdict
    from runner.target import target_for

    target = target_for(settings)
    with wait.connected(settings, target.url, target.table, target.source, sleep) as driver:
        history = target.history
        if history is not None and history.verdict(
                driver.read_versions(target.table)) is not Verdict.AHEAD:
            def reading() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
                current = driver.read_versions(target.table)
                heads = tuple(sorted(history.heads))
                return current, heads, () if history.verdict(current) is Verdict.AT_HEAD \
                    else heads
        else:
            # No manifest, or a revision it does not know: the app's env.py decides.
            from runner.revisions import read_state

            migrations = target.app_migrations(settings)

            def reading() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
                state = read_state(migrations, settings.allow_newer_database)
                pending = tuple(script.revision for script in state.pending)
                return state.current, state.heads, pending

        _poll_until_head(settings, reading, sleep)


def _poll_until_head(
    settings: Settings,
    reading: Callable[[], tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]],
    sleep: Callable[[float], None],
) -> None:
    """Poll `reading()` (current, heads, pending) until nothing is pending."""

    def log_waiting(retry: tenacity.RetryCallState) -> None:
        if retry.outcome is not None and retry.outcome.failed:
            wait.log_waiting(retry)
        elif retry.attempt_number == 1 and retry.outcome is not None:
            current, heads, _ = retry.outcome.result()
            emit("serve.waiting", f"waiting for the database to reach head {', '.join(heads)}"
                 f" (at {', '.join(current) or 'base'}); another process migrates it",
                 current=list(current), heads=list(heads))

    try:
        current, heads, _ = tenacity.Retrying(
            stop=tenacity.stop_after_delay(settings.remaining(settings.wait_timeout)),
            wait=tenacity.wait_exponential(multiplier=0.1, max=MAX_POLL_INTERVAL)
            + tenacity.wait_random(0, 0.1),
            # A restart or failover while we poll is waited out like a slow migration.
            retry=tenacity.retry_if_result(lambda result: bool(result[2]))
            | tenacity.retry_if_exception(database.is_transient),
            before_sleep=log_waiting,
            sleep=sleep,
        )(reading)
    except tenacity.RetryError as timed_out:
        # The database's own error, when the last reading failed: exit 3 as for any wait.
        current, heads, _ = timed_out.last_attempt.result()
        raise NotAtHead(
            f"the database did not reach head {', '.join(heads)} within"
            f" {settings.wait_timeout:g}s (it is at {', '.join(current) or 'base'}): is the"
            " migration Job or init container running? raise"
            " --wait-timeout/RUNNER_WAIT_TIMEOUT to wait longer",
            current=list(current), heads=list(heads),
        ) from None
    emit("serve.at_head", f"the database is at head {', '.join(heads)}",
         waited=round(time.monotonic() - settings.started, 3))


DEFAULT_GUNICORN_CONFIG = "python:runner.gunicorn_config"
"""The config gunicorn gets when the app brings none (see runner/gunicorn_config.py)."""


def gunicorn_argv(settings: Settings) -> list[str]:
    """gunicorn's argv: the operator's options, then the app, which runner.wsgi loads in
    each worker as `flask` loads it; the bind comes from PORT."""
    config = [] if has_gunicorn_config(settings) else ["-c", DEFAULT_GUNICORN_CONFIG]
    app = f"runner.wsgi:serve({settings.app!r})" if settings.app else "runner.wsgi:serve()"
    return ["gunicorn", *config, *settings.gunicorn_args, app]


def exec_environment(settings: Settings) -> dict[str, str]:
    """gunicorn's environment: the app's (DATABASE_URL as the app serves it), PORT, and the
    log format, which the default config and runner.wsgi follow."""
    return {"PORT": DEFAULT_PORT, **settings.environment,
            "RUNNER_LOG_FORMAT": settings.log_format}


def has_gunicorn_config(settings: Settings) -> bool:
    """Whether gunicorn has a config of the app's: -c/--config given, or ./gunicorn.conf.py."""
    args = [*settings.gunicorn_args,
            *shlex.split(settings.environment.get("GUNICORN_CMD_ARGS", ""))]
    return (any(arg.startswith(("-c", "--config")) for arg in args)
            or Path("gunicorn.conf.py").is_file())


def gunicorn_bind(settings: Settings) -> list[str]:
    """The addresses gunicorn will bind, as it decides: its flags, GUNICORN_CMD_ARGS, PORT."""
    parser = gunicorn.config.Config().parser()
    environment = exec_environment(settings)
    sources = [list(settings.gunicorn_args),
               shlex.split(environment.get("GUNICORN_CMD_ARGS", ""))]
    for args in sources:
        # Quiet: --help, --version or a bad flag are for gunicorn itself to answer.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                bind = parser.parse_known_args(args)[0].bind
            except SystemExit:
                continue
        if bind:
            return list(bind)
    return [f"0.0.0.0:{environment['PORT']}"]


def exec_gunicorn(settings: Settings) -> NoReturn:
    """Replace this process with gunicorn serving the app; returns only by raising."""
    argv = gunicorn_argv(settings)
    # The gunicorn beside this interpreter belongs to the same virtualenv as the app.
    beside = Path(sys.executable).with_name("gunicorn")
    executable = str(beside) if beside.is_file() else "gunicorn"
    bind = gunicorn_bind(settings)
    emit("serve.exec", f"exec {' '.join(argv)} (binding {', '.join(bind)})", argv=argv,
         bind=bind)
    try:
        # The default config formats gunicorn's logs as the runner's, flag or variable.
        os.execvpe(executable, argv, exec_environment(settings))
    except OSError as exc:
        raise ConfigError(
            f"cannot exec gunicorn ({exc.strerror}): install gunicorn in the app's environment"
        ) from None

"""Wait until every database of the app accepts a connection, with tenacity."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import tenacity

from runner import database, signals
from runner.errors import DatabaseUnavailable
from runner.log import emit
from runner.settings import Settings, describe_url

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import URL

T = TypeVar("T")

MAX_DELAY = 1.0
"""The cap on the backoff between attempts, in seconds (before up to 0.2 s of jitter)."""


def retry_policy(
    timeout: float, sleep: Callable[[float], None] = signals.sleep
) -> tenacity.Retrying:
    """Backoff with jitter capped at MAX_DELAY until `timeout`; permanent errors are not retried."""
    return tenacity.Retrying(
        stop=tenacity.stop_after_delay(timeout),
        # wait_exponential_jitter takes multiplier= only from tenacity 9.2: composed here
        # (the cap, then the jitter), as every tenacity since 8 has it.
        wait=tenacity.wait_exponential(multiplier=0.1, max=MAX_DELAY)
        + tenacity.wait_random(0, 0.2),
        retry=tenacity.retry_if_exception(database.is_transient),
        before_sleep=log_waiting,
        sleep=sleep,
        reraise=True,
    )


def wait_for_database(
    settings: Settings, sleep: Callable[[float], None] = signals.sleep,
    default_answered: bool = False,
) -> float:
    """Block until each database accepts a connection; return the seconds it took.

    `default_answered`: the default database already did (waited for before the app was
    loaded), so only the binds are tried: no second engine for it.
    """
    started = time.monotonic()
    for url in settings.bind_urls.values() if default_answered else settings.database_urls:
        remaining = max(0.0, settings.wait_timeout - (time.monotonic() - started))
        wait_for_url(url, remaining, sleep)
    elapsed = time.monotonic() - started
    announce_ready(_names(settings), elapsed)
    return elapsed


def wait_for_url(url: URL, timeout: float, sleep: Callable[[float], None] = signals.sleep) -> None:
    """Block until `url` accepts a connection; DatabaseUnavailable when refused or out of time."""
    import sqlalchemy as sa

    engine = database.create_engine(url, database.attempt_timeout(timeout))
    try:
        retry_policy(timeout, sleep)(_ping, engine)
    except sa.exc.DBAPIError as exc:
        if database.is_permanent(exc):
            fix = (
                "check that the file's directory exists and this user may write to it"
                if url.get_backend_name() == "sqlite"
                else "fix the credentials or database name"
            )
            raise DatabaseUnavailable(
                f"{describe_url(url)} refused the connection: {database.error_text(exc)}"
                f" ({fix} in --database-url/DATABASE_URL)",
                error=database.error_text(exc),
            ) from None
        raise _out_of_time(describe_url(url), exc, timeout) from None
    finally:
        engine.dispose()


def wait_for_answer(
    attempt: Callable[[], T], name: str, timeout: float,
    sleep: Callable[[float], None] = signals.sleep,
) -> T:
    """Retry `attempt` (a bare driver's connection) while it fails as a database that is not up
    yet fails, with `db.waiting` events; DatabaseUnavailable after `timeout`. Any other error
    (a refusal included) is raised as it is, for the caller to take the full path."""
    try:
        return retry_policy(timeout, sleep)(attempt)
    except Exception as exc:
        if not database.is_transient(exc):
            raise
        raise _out_of_time(name, exc, timeout) from None


def announce_ready(names: str, elapsed: float) -> None:
    """The `db.ready` event: `names` accepted a connection after `elapsed` seconds."""
    emit("db.ready", f"{names} accepted a connection", elapsed=round(elapsed, 3))


def _out_of_time(name: str, error: BaseException, timeout: float) -> DatabaseUnavailable:
    return DatabaseUnavailable(
        f"{name} was not reachable within {timeout:g}s:"
        f" {database.error_text(error)} (raise --wait-timeout/RUNNER_WAIT_TIMEOUT,"
        " or check the host and port)",
        error=database.error_text(error),
    )


def _ping(engine: sa.Engine) -> None:
    import sqlalchemy as sa

    with engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))


def log_waiting(state: tenacity.RetryCallState) -> None:
    """tenacity's before_sleep: log `db.waiting` with the error that will be retried."""
    error = state.outcome.exception() if state.outcome else None
    delay = state.next_action.sleep if state.next_action else 0.0
    emit(
        "db.waiting",
        f"database not ready (attempt {state.attempt_number}), retrying in {delay:.2f}s",
        level="warning",
        attempt=state.attempt_number,
        delay=round(delay, 3),
        error=database.error_text(error) if error else "",
    )


def _names(settings: Settings) -> str:
    return ", ".join(describe_url(url) for url in settings.database_urls)

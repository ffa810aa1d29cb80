"""Wait until every database of the app accepts a connection, with tenacity."""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa
import tenacity
from sqlalchemy.engine import URL

from runner import database
from runner.errors import DatabaseUnavailable
from runner.log import emit
from runner.settings import Settings, describe_url

MAX_DELAY = 1.0
"""The cap on the backoff between attempts, in seconds."""


def retry_policy(
    timeout: float, sleep: Callable[[float], None] = time.sleep
) -> tenacity.Retrying:
    """Backoff with jitter capped at MAX_DELAY until `timeout`; permanent errors are not retried."""
    return tenacity.Retrying(
        stop=tenacity.stop_after_delay(timeout),
        wait=tenacity.wait_exponential_jitter(multiplier=0.1, max=MAX_DELAY, jitter=0.2),
        retry=tenacity.retry_if_exception(
            lambda error: isinstance(error, sa.exc.DBAPIError | OSError)
            and not database.is_permanent(error)
        ),
        before_sleep=_log_waiting,
        sleep=sleep,
        reraise=True,
    )


def wait_for_database(
    settings: Settings, sleep: Callable[[float], None] = time.sleep
) -> float:
    """Block until each database accepts a connection; return the seconds it took."""
    started = time.monotonic()
    for url in settings.database_urls:
        remaining = max(0.0, settings.wait_timeout - (time.monotonic() - started))
        wait_for_url(url, remaining, sleep)
    elapsed = time.monotonic() - started
    emit("db.ready", f"{_names(settings)} accepted a connection", elapsed=round(elapsed, 3))
    return elapsed


def wait_for_url(url: URL, timeout: float, sleep: Callable[[float], None] = time.sleep) -> None:
    """Block until `url` accepts a connection; DatabaseUnavailable when refused or out of time."""
    engine = database.create_engine(url, min(database.CONNECT_TIMEOUT, max(timeout, 1.0)))
    try:
        retry_policy(timeout, sleep)(_ping, engine)
    except sa.exc.DBAPIError as exc:
        if database.is_permanent(exc):
            raise DatabaseUnavailable(
                f"{describe_url(url)} refused the connection: {database.error_text(exc)}"
                " (fix the credentials or database name in --database-url/DATABASE_URL)",
                error=database.error_text(exc),
            ) from None
        raise DatabaseUnavailable(
            f"{describe_url(url)} was not reachable within {timeout:g}s:"
            f" {database.error_text(exc)} (raise --wait-timeout/RUNNER_WAIT_TIMEOUT,"
            " or check the host and port)",
            error=database.error_text(exc),
        ) from None
    finally:
        engine.dispose()


def _ping(engine: sa.Engine) -> None:
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))


def _log_waiting(state: tenacity.RetryCallState) -> None:
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

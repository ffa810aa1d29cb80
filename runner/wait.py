"""Wait until a database accepts a connection, with tenacity, within RUNNER_WAIT_TIMEOUT."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import tenacity

from runner import database, signals
from runner.drivers import Driver, VersionTable, open_driver
from runner.errors import ConfigError, DatabaseUnavailable
from runner.log import emit
from runner.settings import Settings
from runner.urls import DatabaseUrl

T = TypeVar("T")

MAX_DELAY = 1.0
"""The cap on the backoff between attempts, in seconds (before up to 0.2 s of jitter)."""

# wait_exponential_jitter takes multiplier= only from tenacity 9.2: composed here (the cap,
# then the jitter), as every tenacity since 8 has it.
BACKOFF = tenacity.wait_exponential(multiplier=0.1, max=MAX_DELAY) + tenacity.wait_random(0, 0.2)
"""The pause between two attempts to reach the database."""


def retry_policy(
    timeout: float, sleep: Callable[[float], None] = signals.sleep
) -> tenacity.Retrying:
    """Backoff with jitter capped at MAX_DELAY until `timeout`: a database not up yet, full
    or restarting is tried again; a refusal, or any other error, is not."""
    return tenacity.Retrying(
        stop=tenacity.stop_after_delay(timeout),
        wait=BACKOFF,
        retry=tenacity.retry_if_exception(database.is_transient),
        before_sleep=log_waiting,
        sleep=sleep,
        reraise=True,
    )


def connected(
    settings: Settings, url: DatabaseUrl, table: VersionTable, source: str,
    sleep: Callable[[float], None] = signals.sleep,
) -> Driver:
    """The runner's driver for `url` (the lock of `table`), connected once the database
    accepts it, within the wait budget; `source` names where the URL came from, for hints."""
    driver = open_driver(url, table, settings.wait_timeout)
    try:
        wait_for(settings, driver.connect, url, source, sleep)
    except BaseException:
        driver.close()
        raise
    return driver


def wait_for(
    settings: Settings, attempt: Callable[[], T], url: DatabaseUrl, source: str,
    sleep: Callable[[float], None] = signals.sleep,
) -> T:
    """`attempt()` (a connection to `url`) retried while the database is not up, then
    `db.ready`; DatabaseUnavailable when refused or out of time."""
    timeout = settings.wait_timeout
    try:
        result = retry_policy(settings.remaining(timeout), sleep)(attempt)
    except Exception as exc:
        if database.is_bad_parameter(exc):
            raise ConfigError(
                f"{url.describe()}: the driver does not take these connection parameters:"
                f" {type(exc).__name__}: {database.error_text(exc)} (fix the query string of"
                f" the URL in {source})") from None
        if database.is_connection_error(exc) and database.is_permanent(exc):
            fix = ("check that the file's directory exists and this user may write to it"
                   if url.backend == "sqlite" else "fix the credentials or database name")
            raise DatabaseUnavailable(
                f"{url.describe()} refused the connection: {database.error_text(exc)}"
                f" ({fix} in {source})", error=database.error_text(exc),
            ) from None
        if database.is_transient(exc):
            raise DatabaseUnavailable(
                f"{url.describe()} was not reachable within {timeout:g}s:"
                f" {database.error_text(exc)} (raise --wait-timeout/RUNNER_WAIT_TIMEOUT,"
                f" or check the host and port in {source})",
                error=database.error_text(exc),
            ) from None
        raise
    emit("db.ready", f"{url.describe()} accepted a connection",
         elapsed=round(time.monotonic() - settings.started, 3))
    return result


def log_waiting(state: tenacity.RetryCallState) -> None:
    """tenacity's before_sleep: log `db.waiting` with the error that will be retried."""
    error = state.outcome.exception() if state.outcome else None
    emit_waiting(state.attempt_number, state.next_action.sleep if state.next_action else 0.0,
                 error)


def emit_waiting(attempt: int, delay: float, error: BaseException | None) -> None:
    """`db.waiting`: attempt `attempt` failed on `error`; the next one in `delay` seconds."""
    emit(
        "db.waiting",
        f"database not ready (attempt {attempt}), retrying in {delay:.2f}s",
        level="warning",
        attempt=attempt,
        delay=round(delay, 3),
        error=database.error_text(error) if error else "",
    )


def wait_for_databases(settings: Settings, sleep: Callable[[float], None] = signals.sleep
                       ) -> None:
    """Wait until every database of the app accepts a connection: the one given first
    (before the app is loaded), then the app's binds."""
    from runner.target import target_for

    target = target_for(settings)
    connected(settings, target.url, target.table, target.source, sleep).close()
    if target.manifest is not None and not target.manifest.binds:
        return  # the app has no other database
    for name, url in target.app_migrations(settings).app.bind_urls.items():
        connected(settings, url, VersionTable(), f"the app's SQLALCHEMY_BINDS[{name!r}]",
                  sleep).close()

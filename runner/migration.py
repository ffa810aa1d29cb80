"""Bring the databases to head: check, lock, re-check, upgrade with alembic.command, release."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from runner import database, locks, signals, table_locks, wait
from runner.errors import DatabaseUnavailable, Interrupted, MigrationFailed, RunnerError
from runner.fastlock import BareLock
from runner.log import emit, preserved_logging
from runner.revisions import (
    Migrations,
    RevisionState,
    load_migrations,
    read_state,
    run_upgrade,
    started_revisions,
)
from runner.settings import Settings
from runner.stopping import stoppable_upgrade


@dataclass(frozen=True)
class MigrationResult:
    """What one `migrate` did: the revisions it applied, oldest first (none for a no-op)."""

    applied: tuple[str, ...]
    elapsed: float


def migrate(
    settings: Settings, sleep: Callable[[float], None] = signals.sleep,
    taken: BareLock | None = None,
) -> MigrationResult:
    """Upgrade every database to head under the migration lock; no lock when already there.

    `taken`: the lock the fast path took before the app was loaded (runner.cli), taken over.
    """
    started = time.monotonic()
    migrations = load_migrations(settings)
    state = _read_state(settings, migrations, started, sleep)
    if state.at_head:
        return _noop(state, started, "the database is already at head")
    # One budget for waiting on the migration lock and for retrying table-lock timeouts.
    lock_deadline = started + settings.lock_timeout
    lock, acquired = _take_lock(settings, migrations, state, started, sleep, taken)
    if not acquired:
        lock.close()
        return _noop(state, started, "another process brought the database to head")
    with lock:
        held_since = time.monotonic()
        try:
            signals.stop_request.check()
            # Under the lock too, a full server ("too many connections") is waited out.
            state = wait.retry_policy(max(0.0, lock_deadline - time.monotonic()), sleep)(
                read_state, settings, migrations)
            applied = () if state.at_head else table_locks.upgrade_with_retries(
                settings, lambda: _upgrade_retrying(settings, migrations, lock, started, sleep),
                lock_deadline, sleep,
            )
        finally:
            # Closing the connection frees the lock too, so a failed release is harmless.
            with contextlib.suppress(sa.exc.SQLAlchemyError, OSError):
                lock.release()
            emit("lock.released", "released the migration lock", lock=lock.name,
                 waited=round(held_since - started, 3),
                 held=round(time.monotonic() - held_since, 3))
    if not applied:
        return _noop(state, started, "another process brought the database to head")
    elapsed = time.monotonic() - started
    emit("migrate.applied", f"applied {len(applied)} revision(s): {', '.join(applied)}",
         revisions=list(applied), elapsed=round(elapsed, 3))
    # A signal during the last revision still ends the process as stopped (128 + signal).
    signals.stop_request.check()
    return MigrationResult(applied=applied, elapsed=elapsed)


def open_migration_lock(
    settings: Settings, state: RevisionState, adopted: locks.TakenConnection | None = None
) -> locks.MigrationLock:
    """The migration lock of these databases on a connection of its own, not yet taken (or
    on `adopted`, a DB-API connection that holds it already)."""
    first = state.databases[0]
    name = locks.lock_name(
        settings.database_url.database, first.version_table, first.version_table_schema
    )
    return locks.open_lock(settings.database_url, name, adopted)


def _read_state(
    settings: Settings, migrations: Migrations, started: float, sleep: Callable[[float], None]
) -> RevisionState:
    """Read the state, retrying a failed connection until the wait deadline."""
    remaining = max(0.0, settings.wait_timeout - (time.monotonic() - started))
    state: RevisionState = wait.retry_policy(remaining, sleep)(read_state, settings, migrations)
    return state


def _take_lock(
    settings: Settings,
    migrations: Migrations,
    state: RevisionState,
    started: float,
    sleep: Callable[[float], None],
    taken: BareLock | None = None,
) -> tuple[locks.MigrationLock, bool]:
    """Open the lock and poll it; a lost connection is opened again, until the lock deadline.

    The lock `taken` by the fast path is taken over with its connection where the app's
    driver is the fast path's, else given back just before this process takes it again.
    """

    def open_and_poll() -> tuple[locks.MigrationLock, bool]:
        nonlocal taken
        adopted = taken.detach(settings.database_url.get_driver_name()) if taken else None
        lock = open_migration_lock(settings, state, adopted)
        try:
            if taken is not None:
                taken.close()  # (a no-op once detached) another replica may take it now
                taken = None
            remaining = max(0.0, settings.lock_timeout - (time.monotonic() - started))
            return lock, locks.acquire(
                lock, remaining, stop_waiting=lambda: _head_reached(lock, settings, migrations,
                                                                    state),
                sleep=sleep,
            )
        except BaseException:
            lock.close()
            raise

    opened: tuple[locks.MigrationLock, bool] = wait.retry_policy(settings.lock_timeout, sleep)(
        open_and_poll
    )
    return opened


def _head_reached(
    lock: locks.MigrationLock, settings: Settings, migrations: Migrations, state: RevisionState
) -> bool:
    """Whether another process brought the database to head, seen by a waiter between polls.

    With one database, one SELECT on the lock's own connection, so that a waiter holds a
    single connection (a rollout starts every replica at once); otherwise through env.py.
    """
    if len(state.databases) == 1:
        database = state.databases[0]
        current = lock.current_revisions(database.version_table, database.version_table_schema)
        if current is not None:
            return set(current) == set(state.heads)
    return read_state(settings, migrations).at_head


def _upgrade_retrying(
    settings: Settings,
    migrations: Migrations,
    lock: locks.MigrationLock,
    started: float,
    sleep: Callable[[float], None],
) -> tuple[str, ...]:
    """Upgrade; a connection refused before any revision started (too many clients) is
    retried until the lock deadline, since nothing has changed yet."""
    remaining = max(0.0, settings.lock_timeout - (time.monotonic() - started))
    applied: tuple[str, ...] = wait.retry_policy(remaining, sleep)(
        upgrade, settings, migrations, lock
    )
    return applied


def upgrade(
    settings: Settings, migrations: Migrations, lock: locks.MigrationLock | None = None
) -> tuple[str, ...]:
    """Run `alembic upgrade head` through the app's env.py, stoppable by a signal.

    MigrationFailed names the revision; DatabaseUnavailable when the connection was lost;
    Interrupted when a signal stopped it.
    """
    request = signals.stop_request
    kill_query = getattr(lock, "kill_query", None)
    finish_first = settings.database_url.get_backend_name() in ("mysql", "mariadb")
    with _recorded_steps() as steps, preserved_logging(), settings.app.app_context(), \
            stoppable_upgrade(request, steps, settings.stop_timeout, kill_query,
                              finish_first) as stopper:
        try:
            run_upgrade(migrations)
        except RunnerError:
            raise
        except Exception as exc:
            revision = steps[-1] if steps else None
            if request.signum is not None:
                raise Interrupted(request.signum, _stop_detail(stopper.killed_revision)) from exc
            lock_wait = table_locks.is_table_lock_timeout(exc)
            if not steps and database.is_transient(exc) and not lock_wait:
                raise  # no revision started: the caller may try again
            if database.is_connection_lost(exc):
                raise DatabaseUnavailable(
                    f"lost the database during revision {revision}:"
                    f" {database.error_text(exc)} (the run can be retried: the database is at"
                    " the last revision it recorded)",
                    revision=revision, error=database.error_text(exc),
                ) from None
            if lock_wait:
                # table_locks retries it or writes its own message: no reading of the state.
                error = database.error_text(exc)
                where = f"revision {revision}" if revision else "the upgrade"
                raise MigrationFailed(
                    f"{where} waited for a table lock: {error}", revision=revision, error=error,
                ) from exc
            raise _failure(settings, migrations, revision, exc) from exc
        except Interrupted as stop:
            raise Interrupted(stop.signum, _stop_detail(stopper.killed_revision)) from None
    # A multi-database env.py runs each revision once per database.
    return tuple(dict.fromkeys(steps))


# MySQL errors for "already exists": what a revision interrupted mid-way leaves behind.
_LEFTOVER_MYSQL_ERRORS = {1050: "table", 1060: "column", 1061: "index"}


def _failure(
    settings: Settings, migrations: Migrations, revision: str | None, exc: Exception
) -> MigrationFailed:
    """The MigrationFailed for `exc`, saying where the database really is now."""
    original = getattr(exc, "orig", None) or exc
    error = database.error_text(exc)
    where = f"revision {revision}" if revision else "the upgrade"
    args = getattr(original, "args", ())
    code = args[0] if type(original).__module__.startswith("pymysql") and args else None
    if code in _LEFTOVER_MYSQL_ERRORS:
        return MigrationFailed(
            f"{where} failed: {error}: this {_LEFTOVER_MYSQL_ERRORS[code]} looks like the"
            f" leftovers of an earlier run interrupted inside {revision} (MySQL commits each"
            " DDL statement at once): repair the schema by hand (drop what it created, or"
            f" finish it and record it with 'flask db stamp {revision}'), then run again",
            revision=revision, error=error,
        )
    try:
        now = ", ".join(read_state(settings, migrations).current) or "base"
        position = f"the database is at {now}"
    except Exception:  # only the message's detail is lost
        position = "where the database stands is unknown: see 'runner status'"
    partial = ""
    if settings.database_url.get_backend_name() in ("mysql", "mariadb") and revision:
        partial = f"; {revision} may be partly applied (MySQL commits DDL as it runs)"
    return MigrationFailed(
        f"{where} failed: {type(original).__name__}: {error} (fix the migration script; the"
        f" lock was released and {position}{partial})",
        revision=revision, error=error,
    )


def _stop_detail(killed_revision: str | None) -> str:
    if killed_revision is None:
        return ""
    return (
        f"revision {killed_revision} was killed mid-way and may be half-applied (MySQL commits"
        " DDL as it runs): check its tables, repair them, and record the revision with"
        " 'flask db stamp' if it completed"
    )


def _noop(state: RevisionState, started: float, message: str) -> MigrationResult:
    """Log `migrate.noop`; any reading will do, only its (unchanging) script heads are used."""
    elapsed = time.monotonic() - started
    emit("migrate.noop", message, heads=list(state.heads), elapsed=round(elapsed, 3),
         path="full")
    return MigrationResult(applied=(), elapsed=elapsed)


@contextlib.contextmanager
def _recorded_steps() -> Iterator[list[str]]:
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

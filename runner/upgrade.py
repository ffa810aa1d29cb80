"""Under the migration lock: load the app, re-check through its env.py, upgrade, release.

Only the replica that holds the lock gets here, so only it loads the app. The upgrade runs
with the safety nets: a table-lock timeout with retries (runner.table_locks) and a stop at
a safe point on a signal (runner.stopping).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from runner import database, lock, manifest, signals, table_locks, wait
from runner.drivers import Driver
from runner.errors import (
    DatabaseUnavailable,
    Interrupted,
    MigrationFailed,
    RunnerError,
)
from runner.heartbeat import heartbeat
from runner.log import preserved_logging, recorded_steps
from runner.revisions import (
    Migrations,
    RevisionState,
    load,
    read_state,
    run_upgrade,
)
from runner.settings import Settings
from runner.stopping import stoppable_upgrade


@dataclass(frozen=True)
class Holding:
    """What the holder of the lock did: the revisions it applied (`by` "runner"), or that
    the app applied itself while it was loaded (`by` "app", a self-migrating factory)."""

    applied: tuple[str, ...]
    state: RevisionState
    by: str = "runner"


def migrate_holding(settings: Settings, migrations: Migrations | None, driver: Driver,
                    held_since: float, sleep: Callable[[float], None]) -> Holding:
    """Holding the lock on `driver` (since `held_since`, on the monotonic clock): load the
    app (unless `migrations` has it), read the state through env.py, upgrade what is
    pending; release the lock. A factory that migrates by itself does it now, under the
    lock, and is reported as such."""
    try:
        signals.stop_request.check()
        migrations = migrations or load(settings)
        state = read_state_within(settings, migrations, settings.lock_timeout, sleep)
        _refresh_manifest(settings, migrations, state)
        applied: tuple[str, ...] = ()
        if not state.at_head:
            from runner import safety

            safety.gate(settings, migrations, state, driver)
            applied = table_locks.upgrade_with_retries(
                settings, migrations, driver,
                lambda: _upgrade_retrying(settings, migrations, driver, sleep), sleep)
    finally:
        lock.release(driver, settings.started, held_since)
    if not applied and migrations.app.migrated_itself:
        return Holding(migrations.app.migrated_itself, state, by="app")
    return Holding(applied, state)


def read_state_within(settings: Settings, migrations: Migrations, budget: float,
                sleep: Callable[[float], None]) -> RevisionState:
    """Read the state through env.py, retrying a failed connection within `budget` seconds
    of the start."""
    state: RevisionState = wait.retry_policy(settings.remaining(budget), sleep)(
        read_state, migrations, settings.allow_newer_database)
    return state


def _refresh_manifest(settings: Settings, migrations: Migrations, state: RevisionState) -> None:
    """Keep an existing manifest current: what the app configures, and the version table
    env.py was seen to use (which may differ from Migrate's arguments)."""
    if not manifest.path().is_file():
        return  # made only by `runner prepare`: nothing to keep current
    table = (state.databases[0].version_table if len(state.databases) == 1
             else migrations.version_table)
    with contextlib.suppress(Exception):  # a stale manifest only costs a full start
        manifest.refresh(manifest.make(migrations, table, settings.directory))


def _upgrade_retrying(settings: Settings, migrations: Migrations, driver: Driver,
                      sleep: Callable[[float], None]) -> tuple[str, ...]:
    """Upgrade; a connection refused before any revision started (too many clients) is
    retried until the lock deadline, since nothing has changed yet."""
    applied: tuple[str, ...] = wait.retry_policy(settings.remaining(settings.lock_timeout),
                                                 sleep)(upgrade, settings, migrations, driver)
    return applied


def upgrade(settings: Settings, migrations: Migrations, driver: Driver) -> tuple[str, ...]:
    """Run `alembic upgrade head` through the app's env.py, stoppable by a signal.

    MigrationFailed names the revision; DatabaseUnavailable when the connection was lost;
    Interrupted when a signal stopped it.
    """
    request = signals.stop_request
    kill_query = getattr(driver, "kill_query", None)
    finish_first = migrations.app.database_url.backend in ("mysql", "mariadb")
    with recorded_steps() as steps, preserved_logging(), \
            migrations.app.flask_app.app_context(), \
            stoppable_upgrade(request, steps, settings.stop_timeout, kill_query,
                              finish_first) as stopper, \
            heartbeat(driver, stopper, steps, settings.progress_interval, settings.started):
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
    original = database.driver_error(exc)
    error = database.error_text(exc)
    where = f"revision {revision}" if revision else "the upgrade"
    code = database.mysql_code(exc)
    if code in _LEFTOVER_MYSQL_ERRORS:
        return MigrationFailed(
            f"{where} failed: {error}: this {_LEFTOVER_MYSQL_ERRORS[code]} looks like the"
            f" leftovers of an earlier run interrupted inside {revision} (MySQL commits each"
            " DDL statement at once): repair the schema by hand (drop what it created, or"
            f" finish it and record it with 'flask db stamp {revision}'), then run again",
            revision=revision, error=error,
        )
    try:
        now = ", ".join(read_state(migrations, settings.allow_newer_database).current) or "base"
        position = f"the database is at {now}"
    except Exception:  # only the message's detail is lost
        position = "where the database stands is unknown: see 'runner status'"
    partial = ""
    if migrations.app.database_url.backend in ("mysql", "mariadb") and revision:
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

"""Bring the databases to head: check, lock, re-check, upgrade with alembic.command, release."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import sqlalchemy as sa
from alembic import command

from runner import database, locks
from runner.errors import MigrationFailed
from runner.log import emit
from runner.revisions import Migrations, RevisionState, load_migrations, read_state
from runner.settings import Settings


@dataclass(frozen=True)
class MigrationResult:
    """What one `migrate` did: the revisions it applied, oldest first (none for a no-op)."""

    applied: tuple[str, ...]
    elapsed: float


def migrate(settings: Settings, sleep: Callable[[float], None] = time.sleep) -> MigrationResult:
    """Upgrade every database to head under the migration lock; no lock when already there."""
    started = time.monotonic()
    migrations = load_migrations(settings)
    state = read_state(settings, migrations)
    if state.at_head:
        return _noop(state, started, "the database is already at head")
    first = state.databases[0]
    name = locks.lock_name(
        settings.database_url.database, first.version_table, first.version_table_schema
    )
    with locks.open_lock(settings.database_url, name) as lock:
        if not locks.acquire(
            lock,
            settings.lock_timeout,
            stop_waiting=lambda: read_state(settings, migrations).at_head,
            sleep=sleep,
        ):
            return _noop(state, started, "another process brought the database to head")
        held_since = time.monotonic()
        try:
            state = read_state(settings, migrations)
            if state.at_head:
                return _noop(state, started, "another process brought the database to head")
            applied = upgrade(settings, migrations)
        finally:
            # Closing the connection frees the lock too, so a failed release is harmless.
            with contextlib.suppress(sa.exc.DBAPIError, OSError):
                lock.release()
            emit("lock.released", "released the migration lock", lock=lock.name,
                 waited=round(held_since - started, 3),
                 held=round(time.monotonic() - held_since, 3))
    elapsed = time.monotonic() - started
    emit("migrate.applied", f"applied {len(applied)} revision(s): {', '.join(applied)}",
         revisions=list(applied), elapsed=round(elapsed, 3))
    return MigrationResult(applied=applied, elapsed=elapsed)


def upgrade(settings: Settings, migrations: Migrations) -> tuple[str, ...]:
    """Run `alembic upgrade head` through the app's env.py; MigrationFailed names the revision."""
    with _recorded_steps() as steps, settings.app.app_context():
        try:
            command.upgrade(migrations.config, "head")
        except Exception as exc:
            revision = steps[-1] if steps else None
            error = database.error_text(exc)
            where = f"revision {revision}" if revision else "the upgrade"
            raise MigrationFailed(
                f"{where} failed: {type(getattr(exc, 'orig', None) or exc).__name__}: {error}"
                " (fix the migration script; the lock was released and the database is at"
                " the last revision that completed)",
                revision=revision,
                error=error,
            ) from exc
    # A multi-database env.py runs each revision once per database.
    return tuple(dict.fromkeys(steps))


def _noop(state: RevisionState, started: float, message: str) -> MigrationResult:
    """Log `migrate.noop`; any reading will do, only its (unchanging) script heads are used."""
    elapsed = time.monotonic() - started
    emit("migrate.noop", message, heads=list(state.heads), elapsed=round(elapsed, 3))
    return MigrationResult(applied=(), elapsed=elapsed)


@contextlib.contextmanager
def _recorded_steps() -> Iterator[list[str]]:
    """Collect the revision of each step Alembic starts, from its 'Running ...' log records."""
    steps: list[str] = []

    def record(record: logging.LogRecord) -> bool:
        step = record.args[0] if isinstance(record.args, tuple) and record.args else None
        revisions = getattr(step, "to_revisions", None)
        if getattr(step, "is_upgrade", False) and revisions:
            steps.extend(revisions)
        return True

    # A filter, not a handler: env.py's fileConfig() strips this logger's handlers.
    logger = logging.getLogger("alembic.runtime.migration")
    logger.addFilter(record)
    try:
        yield steps
    finally:
        logger.removeFilter(record)

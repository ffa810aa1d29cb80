"""Bring the databases to head: wait, read, lock, then (runner.upgrade) upgrade, release.

One pipeline. The runner's own connection (runner.drivers) is opened by the wait and held
to the end; it reads the version table and takes the migration lock. At head (told by a
valid manifest with one query), nothing more happens: no lock, no app. Behind, or not known
without the app, the replica polls the lock; only the one that holds it loads the app
(whose factory may touch the database) and upgrades through the app's env.py.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runner import lock, signals, wait
from runner.drivers import Driver, VersionTable
from runner.history import Verdict
from runner.log import emit
from runner.settings import Settings
from runner.target import Target, target_for

if TYPE_CHECKING:
    from runner.revisions import Migrations, RevisionState


@dataclass(frozen=True)
class MigrationResult:
    """What one `migrate` did: the revisions it applied, oldest first (none for a no-op)."""

    applied: tuple[str, ...]
    elapsed: float


def migrate(settings: Settings, sleep: Callable[[float], None] = signals.sleep
            ) -> MigrationResult:
    """Upgrade every database to head under the migration lock; no lock when already there."""
    target = target_for(settings)
    with wait.connected(settings, target.url, target.table, target.source, sleep) as driver:
        return migrate_on(settings, target, driver, sleep)


def migrate_on(settings: Settings, target: Target, driver: Driver,
               sleep: Callable[[float], None] = signals.sleep) -> MigrationResult:
    """`migrate` on the runner's connection to the target database."""
    migrations = target.migrations
    if migrations is not None:
        from runner.upgrade import read_state_within

        state = read_state_within(settings, migrations, settings.wait_timeout, sleep)
        if state.at_head and migrations.app.migrated_itself:
            # Every replica loads such an app before the lock: they race, outside it.
            emit("app.migrated", "the app migrated the database itself while it loaded,"
                 " before the migration lock: set DATABASE_URL, so that only the replica"
                 " that holds the lock loads the app", level="warning")
            return _applied(settings, migrations.app.migrated_itself, "app")
        if state.at_head:
            return _noop(settings, state.heads, "the database is already at head", "full")
        table, at_head = _watch(state, migrations)
    elif target.history is not None:
        history = target.history
        if target.at_head(settings, driver, sleep):
            return _noop(settings, tuple(history.heads), "the database is already at head",
                         "fast")
        # Behind, or at a revision the manifest does not know (a newer release's, or one
        # from a configuration only the app can see): the app decides, under the lock.
        table = target.table

        def at_head(current: tuple[str, ...]) -> bool:
            return history.verdict(current) is Verdict.AT_HEAD
    else:
        table, at_head = target.table, None  # only the app can tell: wait for the lock
    acquired = lock.acquire(driver, settings.remaining(settings.lock_timeout), table, at_head,
                            sleep, while_waiting=None if at_head else _import_app_loading)
    held_since = time.monotonic()
    if not acquired:
        known = target.history or (migrations.history if migrations else None)
        return _noop(settings, tuple(known.heads) if known else (),
                     "another process brought the database to head",
                     "full" if migrations else "fast")
    from runner.upgrade import migrate_holding

    held = migrate_holding(settings, migrations, driver, held_since, sleep)
    if not held.applied:
        # Behind when this process began to wait, unless it could not tell without the app.
        judged = target.history is not None or migrations is not None
        return _noop(settings, held.state.heads, "another process brought the database to"
                     " head" if judged else "the database is already at head", "full")
    return _applied(settings, held.applied, held.by)


def _import_app_loading() -> None:
    """Import what loading the app under the lock will need (Flask, Flask-Migrate, Alembic:
    nearly all of its CPU), while another process holds the lock.

    Without a manifest every replica loads the app under the lock, one after another: with
    the libraries imported while they wait, side by side, each holds the lock only for the
    app's own code. Importing them runs none of the app's.
    """
    for name in ("flask.cli", "flask_sqlalchemy", "flask_migrate", "runner.upgrade"):
        importlib.import_module(name)


def _applied(settings: Settings, applied: tuple[str, ...], by: str) -> MigrationResult:
    """Log `migrate.applied` (`by` the runner, or the app's own start-up)."""
    elapsed = time.monotonic() - settings.started
    what = (f"the app applied {len(applied)} revision(s) itself while it loaded" if by == "app"
            else f"applied {len(applied)} revision(s)")
    emit("migrate.applied", f"{what}: {', '.join(applied)}", revisions=list(applied),
         elapsed=round(elapsed, 3), by=by)
    # A signal during the last revision still ends the process as stopped (128 + signal).
    signals.stop_request.check()
    return MigrationResult(applied=applied, elapsed=elapsed)


def _watch(state: RevisionState, migrations: Migrations
           ) -> tuple[VersionTable, Callable[[tuple[str, ...]], bool] | None]:
    """What a waiter reads between polls to see the head arrive: the version table env.py
    was seen to use; with several databases, nothing (the holder's re-check tells)."""
    if len(state.databases) != 1:
        return migrations.version_table, None
    history = migrations.history

    def at_head(current: tuple[str, ...]) -> bool:
        return history.verdict(current) is not Verdict.BEHIND

    return state.databases[0].version_table, at_head


def _noop(settings: Settings, heads: tuple[str, ...], message: str, path: str
          ) -> MigrationResult:
    """Log `migrate.noop`; `path` says whether the app was loaded ("full") or not ("fast")."""
    elapsed = time.monotonic() - settings.started
    emit("migrate.noop", message, heads=sorted(heads), elapsed=round(elapsed, 3), path=path)
    return MigrationResult(applied=(), elapsed=elapsed)



"""Where each database stands against the migration scripts, read through the app's env.py."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError

from runner.app import LoadedApp, load_app
from runner.drivers import VersionTable
from runner.errors import NotAtHead, RevisionsUnusable
from runner.history import History, Verdict, judge_newer
from runner.log import ALEMBIC_LOGGING_INI, preserved_logging
from runner.settings import Settings
from runner.urls import DatabaseUrl


@dataclass(frozen=True)
class DatabaseRevisions:
    """One database's current revisions and the version table that records them."""

    name: str
    current: tuple[str, ...]
    version_table: VersionTable
    url: DatabaseUrl | None = None
    """Where env.py connected (None offline)."""
    ahead: tuple[str, ...] = ()
    """Revisions the scripts do not know, taken as newer (RUNNER_ALLOW_NEWER_DATABASE)."""


@dataclass(frozen=True)
class RevisionState:
    """The scripts' head and every database's position, as of one reading."""

    heads: tuple[str, ...]
    databases: tuple[DatabaseRevisions, ...]
    pending: tuple[Script, ...]

    @property
    def at_head(self) -> bool:
        """Whether every database is at the scripts' head (or allowed ahead of it)."""
        return not self.pending

    @property
    def current(self) -> tuple[str, ...]:
        """The current revisions of every database, without repeats, in order."""
        return tuple(dict.fromkeys(rev for db in self.databases for rev in db.current))


@dataclass(frozen=True)
class Migrations:
    """The app's Alembic config and its migration scripts, read once per command."""

    app: LoadedApp
    config: Config
    script: ScriptDirectory

    @functools.cached_property
    def history(self) -> History:
        """The scripts' head and every revision they know."""
        return History.of(self.script)

    @property
    def version_table(self) -> VersionTable:
        """The version table the app gives Migrate (env.py passes it to Alembic)."""
        return VersionTable.configured(self.app.extension.configure_args)


def load(settings: Settings) -> Migrations:
    """Load the app and read its migration scripts."""
    return load_migrations(load_app(settings))


def load_migrations(app: LoadedApp) -> Migrations:
    """Build the app's Alembic config and read its scripts; RevisionsUnusable on several heads."""
    config = alembic_config(app)
    return Migrations(app=app, config=config, script=script_directory(config))


def alembic_config(app: LoadedApp) -> Config:
    """The Alembic config the app's Migrate builds (its configure callbacks included), with
    its logging routed to the runner."""
    with app.flask_app.app_context():
        config: Config = app.extension.migrate.get_config(str(app.migrations_directory))
    # Read the app's alembic.ini before env.py's fileConfig() is pointed elsewhere.
    config.file_config  # noqa: B018
    config.config_file_name = str(ALEMBIC_LOGGING_INI)
    return config


def script_directory(config: Config) -> ScriptDirectory:
    """The migration scripts, with exactly one head, or RevisionsUnusable."""
    try:
        script = ScriptDirectory.from_config(config)
        versions = [Path(location) for location in script.version_locations or ()] or [
            Path(script.dir, "versions")
        ]
        heads = script.get_heads()
    except CommandError as exc:
        raise RevisionsUnusable(f"the migration scripts cannot be read: {exc}") from None
    except Exception as exc:
        # Alembic imports every revision file to read the history: name the one that broke.
        raise RevisionsUnusable(
            f"the revision file {_failing_file(exc, config)} cannot be imported:"
            f" {type(exc).__name__}: {' '.join(str(exc).split())} (fix or remove it)",
        ) from None
    if not heads:
        where = ", ".join(str(path) for path in versions)
        missing = [path for path in versions if not path.is_dir()]
        problem = "does not exist" if missing else "holds no revisions"
        raise RevisionsUnusable(
            f"{where} {problem}: an empty history would report any database as at head;"
            " create the first revision with 'flask db migrate' and ship it, or point"
            " --directory/RUNNER_MIGRATIONS_DIR at the right migrations directory"
        )
    if len(heads) > 1:
        raise RevisionsUnusable(
            f"the migration scripts have {len(heads)} heads ({', '.join(heads)}): join them"
            f" with 'flask db merge {' '.join(heads)} -m \"merge heads\"' and ship the merge"
            " revision",
            heads=heads,
        )
    return script


def _failing_file(exc: BaseException, config: Config) -> str:
    """The revision file in `exc`'s traceback (or a SyntaxError's), else the scripts' dir."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return exc.filename
    directory = str(Path(config.get_main_option("script_location") or ".").absolute())
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [frame.filename for frame in frames if frame.filename.startswith(directory)]
    return inside[-1] if inside else directory


def read_state(migrations: Migrations, allow_newer: bool = False) -> RevisionState:
    """Read every database's revisions through env.py, without changing anything."""
    script = migrations.script
    databases: list[DatabaseRevisions] = []

    def record(current: Sequence[str], context: MigrationContext) -> list[Any]:
        # Alembic passes the revisions it has just read from the version table.
        connection = context.connection
        url = (DatabaseUrl.from_sqlalchemy(connection.engine.url)
               if connection is not None else None)
        databases.append(DatabaseRevisions(
            name=url.describe() if url else "offline", current=tuple(current),
            version_table=VersionTable(context.version_table, context.version_table_schema),
            url=url,
        ))
        return []

    with quiet_alembic(), preserved_logging(), migrations.app.flask_app.app_context():
        try:
            with EnvironmentContext(migrations.config, script, fn=record, dont_mutate=True):
                script.run_env()
        finally:
            # The app's pools would keep the connection env.py used: a waiter or a no-op
            # holds none besides the lock's (every replica of a rollout starts at once).
            migrations.app.dispose_engines()
    return state_of(migrations.history, script, databases, allow_newer)


def run_upgrade(
    migrations: Migrations, destination: str = "head", starting: str | None = None,
    sql: bool = False,
) -> None:
    """`alembic upgrade` through env.py, as alembic.command.upgrade runs it, on the scripts
    already read: command.upgrade would read every revision file a second time."""
    script = migrations.script

    def upgrade(current: Any, context: MigrationContext) -> Any:
        # What command.upgrade passes env.py (Alembic 1.9 to today): the steps to apply.
        return script._upgrade_revs(destination, current)

    with EnvironmentContext(migrations.config, script, fn=upgrade, as_sql=sql,
                            starting_rev=starting, destination_rev=destination):
        script.run_env()


def require_head(state: RevisionState) -> None:
    """Raise NotAtHead, naming what is pending, unless every database is at head."""
    if not state.at_head:
        pending = [script.revision for script in state.pending]
        raise NotAtHead(
            f"not at head: the database is at {', '.join(state.current) or 'base'}, the scripts"
            f" at {', '.join(state.heads)}; {len(pending)} to apply ({', '.join(pending)}): run"
            " 'runner migrate'",
            current=list(state.current), heads=list(state.heads), pending=pending,
        )


def state_of(
    history: History, script: ScriptDirectory, databases: Sequence[DatabaseRevisions],
    allow_newer: bool = False,
) -> RevisionState:
    """Check each database's revisions against the scripts; RevisionsUnusable if one is
    ahead of them and that is not allowed."""
    checked = []
    for db in databases:
        if history.verdict(db.current) is Verdict.AHEAD:
            judge_newer(db.name, history, db.current, allow_newer)
            db = dataclasses.replace(db, ahead=history.unknown(db.current))
        checked.append(db)
    heads = tuple(script.get_heads())
    pending: dict[str, Script] = {}
    for db in checked:
        if db.ahead:
            continue
        for revision in _pending(script, db.current):
            pending.setdefault(revision.revision, revision)
    return RevisionState(heads=heads, databases=tuple(checked), pending=tuple(pending.values()))


@contextlib.contextmanager
def quiet_alembic() -> Iterator[None]:
    """Drop Alembic's per-connection INFO lines, which a reading repeats at every lock poll."""

    def warnings_only(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING

    # Filters, not levels: env.py's fileConfig() resets these loggers' levels.
    loggers = [logging.getLogger(name) for name in ("alembic.runtime.migration", "alembic.env")]
    for logger in loggers:
        logger.addFilter(warnings_only)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(warnings_only)


def _pending(script: ScriptDirectory, current: tuple[str, ...]) -> Iterator[Script]:
    """The revisions `upgrade heads` would apply from `current`, oldest first."""
    newest_first = list(script.iterate_revisions("heads", current or "base"))
    yield from reversed(newest_first)

"""Where each database stands against the migration scripts, read through the app's env.py."""

from __future__ import annotations

import contextlib
import dataclasses
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

from runner.errors import NotAtHead, RevisionsUnusable
from runner.log import ALEMBIC_LOGGING_INI, emit, preserved_logging
from runner.settings import Settings, describe_url


@dataclass(frozen=True)
class DatabaseRevisions:
    """One database's current revisions and the version table that records them."""

    name: str
    current: tuple[str, ...]
    version_table: str
    version_table_schema: str | None
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
        """Whether every database is at the scripts' head."""
        return all(db.ahead or set(db.current) == set(self.heads) for db in self.databases)

    @property
    def current(self) -> tuple[str, ...]:
        """The current revisions of every database, without repeats, in order."""
        return tuple(dict.fromkeys(rev for db in self.databases for rev in db.current))


@dataclass(frozen=True)
class Migrations:
    """The app's Alembic config and its migration scripts, read once per command."""

    config: Config
    script: ScriptDirectory


def load_migrations(settings: Settings) -> Migrations:
    """Build the app's Alembic config and read its scripts; RevisionsUnusable on several heads."""
    config = alembic_config(settings)
    return Migrations(config=config, script=script_directory(config))


def alembic_config(settings: Settings) -> Config:
    """The Alembic config the app's Migrate builds, with its logging routed to the runner."""
    with settings.app.app_context():
        config: Config = settings.app.extensions["migrate"].migrate.get_config(
            str(settings.migrations_directory)
        )
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


def read_state(settings: Settings, migrations: Migrations) -> RevisionState:
    """Read every database's revisions through env.py, without changing anything."""
    script = migrations.script
    databases: list[DatabaseRevisions] = []

    def record(current: Sequence[str], context: MigrationContext) -> list[Any]:
        # Alembic passes the revisions it has just read from the version table.
        connection = context.connection
        name = describe_url(connection.engine.url) if connection is not None else "offline"
        databases.append(
            DatabaseRevisions(
                name=name,
                current=tuple(current),
                version_table=context.version_table,
                version_table_schema=context.version_table_schema,
            )
        )
        return []

    with _quiet_alembic(), preserved_logging(), settings.app.app_context():
        with EnvironmentContext(migrations.config, script, fn=record, dont_mutate=True):
            script.run_env()
        # The app's pools would keep the connection env.py used: a waiter or a no-op must
        # hold none besides the lock's (every replica of a rollout starts at once).
        for engine in settings.app.extensions["migrate"].db.engines.values():
            engine.dispose()
    return state_of(script, databases, settings.allow_newer_database)


def started_revisions(record: logging.LogRecord) -> tuple[str, ...]:
    """The revisions an upgrade step starts, from Alembic's 'Running upgrade ...' log record
    on `alembic.runtime.migration`; () for any other record."""
    step = record.args[0] if isinstance(record.args, tuple) and record.args else None
    if not getattr(step, "is_upgrade", False):
        return ()
    return tuple(getattr(step, "to_revisions", None) or ())


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
    script: ScriptDirectory, databases: Sequence[DatabaseRevisions], allow_newer: bool = False
) -> RevisionState:
    """Check each database's revisions against the scripts; RevisionsUnusable if one is unknown."""
    heads = tuple(script.get_heads())
    checked = []
    for db in databases:
        unknown = tuple(rev for rev in db.current if not _known(script, rev))
        if unknown and not allow_newer:
            raise RevisionsUnusable(
                f"{db.name} is at revision {', '.join(unknown)}, which these migration scripts"
                " do not have: this image is older than the database (a newer release migrated"
                " it); deploy that release, or set RUNNER_ALLOW_NEWER_DATABASE=true to run"
                " this older release against it without migrating",
                revisions=list(unknown),
            )
        if unknown:
            emit("revisions.newer", f"{db.name} is at {', '.join(unknown)}, newer than these"
                 " scripts: taken as at head (RUNNER_ALLOW_NEWER_DATABASE)", level="warning",
                 revisions=list(unknown))
            db = dataclasses.replace(db, ahead=unknown)
        checked.append(db)
    pending: dict[str, Script] = {}
    for db in checked:
        if db.ahead:
            continue
        for revision in _pending(script, db.current):
            pending.setdefault(revision.revision, revision)
    return RevisionState(heads=heads, databases=tuple(checked), pending=tuple(pending.values()))


@contextlib.contextmanager
def _quiet_alembic() -> Iterator[None]:
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


def _known(script: ScriptDirectory, revision: str) -> bool:
    with contextlib.suppress(CommandError):
        return script.get_revision(revision) is not None
    return False


def _pending(script: ScriptDirectory, current: tuple[str, ...]) -> Iterator[Script]:
    """The revisions `upgrade heads` would apply from `current`, oldest first."""
    newest_first = list(script.iterate_revisions("heads", current or "base"))
    yield from reversed(newest_first)

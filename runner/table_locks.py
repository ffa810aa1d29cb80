"""Table-lock timeouts for the upgrade: a startup option on the migration connection, retries.

A migration statement that waits for a table lock held by a long transaction makes every
later query on that table queue behind it. The upgrade's connections therefore open with
a short lock timeout (RUNNER_DDL_LOCK_TIMEOUT); a statement that runs into it makes the
upgrade roll back and start again after a pause, while the migration lock stays held,
until RUNNER_LOCK_TIMEOUT runs out (exit 4). A retry is only safe when nothing it would
run again is committed: not when a revision the rollback undoes only in part ran an
`autocommit_block`, and on MySQL/MariaDB, whose DDL commits at once, only when the
statement that timed out was the first of its revision. Otherwise exit 7, naming it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
import tenacity

from runner import database
from runner.errors import ConfigError, LockTimeout, MigrationFailed
from runner.log import emit
from runner.revisions import started_revisions
from runner.settings import Settings

T = TypeVar("T")

FIRST_PAUSE = 0.5
"""The pause before the first retry, in seconds; it doubles with each retry, plus jitter."""

MAX_PAUSE = 10.0
"""The cap on the pause between two attempts, in seconds."""

_POSTGRESQL_LOCK_NOT_AVAILABLE = "55P03"
_MYSQL_LOCK_WAIT_TIMEOUT = 1205
_REJECTED_OPTION = "unsupported startup parameter"
"""PgBouncer's answer to a startup parameter it does not pass on, such as `options`."""


class TableLockTimeout(LockTimeout):
    """A migration statement kept timing out on a table lock until RUNNER_LOCK_TIMEOUT ran out."""


@dataclass
class Step:
    """What one revision of the upgrade ran so far, as seen on its connections."""

    revision: str | None = None
    statements: int = 0
    autocommit: bool = False
    """A statement ran in AUTOCOMMIT, outside any transaction (an `autocommit_block`)."""
    committed_at: int | None = None
    """How many of its statements had run at its last COMMIT."""

    def partly_committed(self, finished: bool) -> bool:
        """Some of its statements are committed but not all (its version stamp included), so
        starting the upgrade again would run those a second time. A failed step is never all
        committed, even when a COMMIT came last (an `autocommit_block` ends with one)."""
        committed = self.autocommit or self.committed_at is not None
        return committed and (not finished or self.committed_at != self.statements)


class StepWatch:
    """Follows one upgrade attempt's statements revision by revision, from Alembic's steps."""

    def __init__(self) -> None:
        self.steps = [Step()]

    @property
    def step(self) -> Step:
        """The revision running now (or last)."""
        return self.steps[-1]

    def before_execute(self, connection: sa.Connection, *args: Any) -> None:
        """`before_cursor_execute` listener: count the statement, note AUTOCOMMIT."""
        self.step.statements += 1
        if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            self.step.autocommit = True

    def committed(self, connection: sa.Connection) -> None:
        """`commit` listener: what the revision ran so far is permanent."""
        self.step.committed_at = self.step.statements

    def filter(self, record: logging.LogRecord) -> bool:
        """Logging filter on `alembic.runtime.migration`: 'Running upgrade ...' starts a step."""
        revisions = started_revisions(record)
        if revisions:
            self.steps.append(Step(revision=revisions[0]))
        return True


def upgrade_with_retries(
    settings: Settings,
    upgrade: Callable[[], T],
    deadline: float,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `upgrade` with the DDL lock timeout set, retrying table-lock timeouts until `deadline`.

    `deadline` is on the `time.monotonic()` clock. Raises TableLockTimeout when the retries
    run out, MigrationFailed when a timed-out revision cannot be retried safely.
    """
    watch = StepWatch()

    def attempt() -> T:
        watch.steps = [Step()]
        try:
            return upgrade()
        except MigrationFailed as failure:
            if is_table_lock_timeout(failure.__cause__):
                raise _TableLockWait(failure, watch.steps) from failure
            raise

    def log_retry(state: tenacity.RetryCallState) -> None:
        wait = state.outcome.exception() if state.outcome else None
        assert isinstance(wait, _TableLockWait)
        delay = state.next_action.sleep if state.next_action else 0.0
        emit("ddl.lock_timeout",
             f"revision {wait.revision} waited {_timeout_text(settings)} for a table lock:"
             f" rolled back, retrying in {delay:.2f}s (attempt {state.attempt_number})",
             level="warning", revision=wait.revision, attempt=state.attempt_number,
             delay=round(delay, 3), error=wait.error)

    started = time.monotonic()

    def past_deadline(state: tenacity.RetryCallState) -> bool:
        return time.monotonic() >= deadline

    def pause(state: tenacity.RetryCallState) -> float:
        # Growing pauses with jitter (composed: tenacity 8 has no wait_exponential_jitter
        # multiplier), cut at the deadline, where one last attempt runs.
        backoff = growing(state)
        return max(0.0, min(backoff, MAX_PAUSE, deadline - time.monotonic()))

    growing = (tenacity.wait_exponential(multiplier=FIRST_PAUSE, max=MAX_PAUSE)
               + tenacity.wait_random(0, FIRST_PAUSE))
    retrying = tenacity.Retrying(
        stop=past_deadline,
        wait=pause,
        retry=tenacity.retry_if_exception(
            lambda error: isinstance(error, _TableLockWait) and error.retryable
        ),
        before_sleep=log_retry,
        sleep=sleep,
        reraise=True,
    )
    with _watched(settings, watch):
        try:
            return retrying(attempt)
        except _TableLockWait as wait:
            if wait.retryable:
                raise _exhausted(settings, wait, retrying, time.monotonic() - started) from None
            raise _not_retried(settings, wait) from None


def is_table_lock_timeout(error: BaseException | None) -> bool:
    """Whether a database error is a statement giving up on a lock (55P03, MySQL 1205)."""
    original = getattr(error, "orig", None) or error
    module = type(original).__module__
    if module.startswith("psycopg"):
        # psycopg 3 calls it sqlstate, psycopg2 pgcode.
        sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
        return sqlstate == _POSTGRESQL_LOCK_NOT_AVAILABLE
    if module.startswith(("pymysql", "MySQLdb", "mysql")):
        args: tuple[Any, ...] = getattr(original, "args", ())
        return bool(args) and args[0] == _MYSQL_LOCK_WAIT_TIMEOUT
    return False


@contextlib.contextmanager
def lock_timeout_on_connect(engines: list[sa.Engine], timeout: float) -> Iterator[None]:
    """While inside, every new connection of `engines` opens with the DDL lock timeout.

    Each pool is emptied on entry, so no connection opened without the timeout is reused,
    and on exit, so the app never gets one that has it. 0 sets nothing.
    """
    installed: list[tuple[sa.Engine, str, Callable[..., Any]]] = []
    for engine in engines:
        listener = _connect_listener(engine.dialect.name, timeout)
        if listener is None:
            continue
        name, function = listener
        engine.dispose()
        sa.event.listen(engine, name, function)
        installed.append((engine, name, function))
    try:
        yield
    finally:
        for engine, name, function in installed:
            sa.event.remove(engine, name, function)
            engine.dispose()


def _connect_listener(dialect: str, timeout: float) -> tuple[str, Callable[..., Any]] | None:
    """The engine event and its listener that give a new connection the lock timeout."""
    if timeout <= 0:
        return None
    if dialect == "postgresql":
        # A startup option, not a SET: a RESET or SET LOCAL in a revision returns to it.
        option = f"-c lock_timeout={max(1, round(timeout * 1000))}"

        def postgresql(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
            cparams["options"] = " ".join(filter(None, (cparams.get("options"), option)))
            try:
                return dialect.connect(*cargs, **cparams)
            except Exception as error:  # the driver's OperationalError (psycopg or psycopg2)
                if _REJECTED_OPTION not in str(error):
                    raise
                # PgBouncer and other poolers refuse the startup parameter that carries it.
                raise ConfigError(
                    "the migration connection goes through a pooler (such as PgBouncer) that"
                    " rejects the startup option carrying RUNNER_DDL_LOCK_TIMEOUT: point"
                    " MIGRATION_DATABASE_URL (or --migration-database-url) at the database"
                    " directly"
                ) from None

        return "do_connect", postgresql
    if dialect in ("mysql", "mariadb"):
        # Whole seconds, at least 1. Metadata locks only (what DDL waits on, and what queues
        # the app's readers); innodb_lock_wait_timeout, for row locks, stays the server's.
        statement = f"SET SESSION lock_wait_timeout = {max(1, math.ceil(timeout))}"

        def mysql(connection: Any, record: Any) -> None:
            with contextlib.closing(connection.cursor()) as cursor:
                cursor.execute(statement)

        # After the app's own init_command, on every new connection.
        return "connect", mysql
    return None


@contextlib.contextmanager
def _watched(settings: Settings, watch: StepWatch) -> Iterator[None]:
    """Install the lock timeout and the step watch on the app's engines, for the upgrade only."""
    with settings.app.app_context():
        engines = list(dict.fromkeys(settings.app.extensions["migrate"].db.engines.values()))
    logger = logging.getLogger("alembic.runtime.migration")
    with contextlib.ExitStack() as stack:
        stack.enter_context(lock_timeout_on_connect(engines, settings.ddl_lock_timeout))
        for engine in engines:
            for name, function in (("before_cursor_execute", watch.before_execute),
                                   ("commit", watch.committed)):
                sa.event.listen(engine, name, function)
                stack.callback(sa.event.remove, engine, name, function)
        # A filter, not a handler: env.py's fileConfig() strips this logger's handlers.
        logger.addFilter(watch.filter)
        stack.callback(logger.removeFilter, watch.filter)
        yield


class _TableLockWait(Exception):
    """A revision's statement timed out on a table lock; whether starting again is safe."""

    def __init__(self, failure: MigrationFailed, steps: list[Step]) -> None:
        super().__init__(failure.message)
        self.revision = failure.fields.get("revision") or steps[-1].revision or "?"
        self.error = database.error_text(failure.__cause__ or failure)
        self.dialect = _dialect(failure.__cause__)
        # On MySQL/MariaDB each DDL statement commits: only a first statement left nothing.
        self.half_applied = self.dialect == "mysql" and steps[-1].statements > 1
        # A revision that committed part of itself, this one or an earlier one whose
        # remainder the failure rolls back along with this one.
        # (The version table's bookkeeping before the first revision can run twice.)
        self.partly_committed: list[str] = [
            step.revision for step in steps
            if step.revision and step.partly_committed(finished=step is not steps[-1])
        ]
        self.retryable = not (self.half_applied or self.partly_committed)


def _dialect(error: BaseException | None) -> str:
    original = getattr(error, "orig", None) or error
    return "postgresql" if type(original).__module__.startswith("psycopg") else "mysql"


def _timeout_text(settings: Settings) -> str:
    if settings.ddl_lock_timeout > 0:
        return f"RUNNER_DDL_LOCK_TIMEOUT ({settings.ddl_lock_timeout:g}s)"
    return "its lock timeout"


def _exhausted(
    settings: Settings, wait: _TableLockWait, retrying: tenacity.Retrying, waited: float
) -> TableLockTimeout:
    attempts = int(retrying.statistics.get("attempt_number", 1))
    holder = ("pg_stat_activity (state 'idle in transaction', old xact_start)"
              if wait.dialect == "postgresql" else "SHOW PROCESSLIST (a long Time, often 'Sleep')")
    return TableLockTimeout(
        f"revision {wait.revision} waited on a table lock in each of {attempts} attempt(s)"
        f" over {waited:.1f}s, {_timeout_text(settings)} each, and was rolled back: another"
        f" session holds a lock on a table it changes. Find that long transaction in {holder}"
        " and end it, then migrate again; or raise --lock-timeout/RUNNER_LOCK_TIMEOUT or"
        f" --ddl-lock-timeout/RUNNER_DDL_LOCK_TIMEOUT. The database said: {wait.error}",
        revision=wait.revision, attempts=attempts, waited=round(waited, 3), error=wait.error,
    )


def _not_retried(settings: Settings, wait: _TableLockWait) -> MigrationFailed:
    if wait.half_applied:
        why = ("MySQL/MariaDB had already committed its earlier statements, so the revision"
               " is half-applied: undo them by hand and migrate again, or complete it by hand"
               f" and run 'flask db stamp {wait.revision}'")
    else:
        partial = ", ".join(wait.partly_committed)
        why = (f"not retried automatically, because revision {partial} ran statements outside"
               " the migration's transaction (autocommit_block), which stay committed while"
               " the rest of it was rolled back: check what it left, then migrate again (with"
               " transaction_per_migration=True in env.py's configure() only the revision"
               " that waited is rolled back)" + _invalid_indexes_hint(settings))
    return MigrationFailed(
        f"revision {wait.revision} waited {_timeout_text(settings)} for a table lock and"
        f" stopped; {why}. The database said: {wait.error}",
        revision=wait.revision, error=wait.error,
    )


def _invalid_indexes_hint(settings: Settings) -> str:
    """Name the INVALID indexes an interrupted CREATE INDEX CONCURRENTLY leaves behind."""
    names: list[str] = []
    for url in settings.database_urls:
        if url.get_backend_name() != "postgresql":
            continue
        engine = database.create_engine(url)
        try:
            with engine.connect() as connection:
                names += connection.scalars(sa.text(
                    "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_index i"
                    " JOIN pg_class c ON c.oid = i.indexrelid"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE NOT i.indisvalid AND n.nspname <> 'pg_catalog'"
                    " AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1"
                ))
        except sa.exc.DBAPIError:
            pass
        finally:
            engine.dispose()
    if not names:
        return ""
    drops = "; ".join(f"DROP INDEX CONCURRENTLY {name}" for name in names)
    return f"; INVALID index(es) left by an interrupted CREATE INDEX CONCURRENTLY: {drops}"

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
from sqlalchemy.engine import Engine

from runner import database
from runner.drivers import Driver
from runner.errors import LockTimeout, MigrationFailed
from runner.log import emit, started_revisions
from runner.revisions import Migrations
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
    migrations: Migrations,
    driver: Driver,
    upgrade: Callable[[], T],
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `upgrade` with the DDL lock timeout set on the app's engines, retrying table-lock
    timeouts until RUNNER_LOCK_TIMEOUT (from the start) runs out.

    Raises TableLockTimeout when the retries run out, MigrationFailed when a timed-out
    revision cannot be retried safely (naming what it left, read on `driver`).
    """
    deadline = settings.started + settings.lock_timeout
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
    with _watched(settings, migrations, watch):
        try:
            return retrying(attempt)
        except _TableLockWait as wait:
            if wait.retryable:
                raise _exhausted(settings, wait, retrying, time.monotonic() - started) from None
            raise _not_retried(settings, wait, driver) from None


def is_table_lock_timeout(error: BaseException | None) -> bool:
    """Whether a database error is a statement giving up on a lock (55P03, MySQL 1205)."""
    if error is None:
        return False
    return (database.sqlstate(error) == _POSTGRESQL_LOCK_NOT_AVAILABLE
            or database.mysql_code(error) == _MYSQL_LOCK_WAIT_TIMEOUT)


_MARK = "runner.lock_timeout"
"""Where a connection records how it got the DDL lock timeout (its pool entry's info)."""


class _SafetyNets:
    """The DDL lock timeout, given to every connection any engine opens during the upgrade:
    the app's, and one env.py builds itself (Flask-Migrate 2's `engine_from_config`).

    PostgreSQL: a startup option (a RESET in a revision returns to it); through a pooler
    that refuses startup options (PgBouncer), `SET LOCAL` at the start of each transaction.
    MySQL/MariaDB: `SET SESSION lock_wait_timeout` as the connection opens. A statement on
    a connection that did not get it (a connection made outside SQLAlchemy's connect, say)
    is reported once: `ddl.lock_timeout_unavailable`.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.warned = False
        self.milliseconds = max(1, round(timeout * 1000))

    def do_connect(self, dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        """DialectEvents.do_connect: open the connection with the timeout (and, psycopg, no
        server-side prepared statements, which a pooler would hand to other sessions)."""
        if dialect.name == "postgresql":
            if dialect.driver == "psycopg":
                cparams.setdefault("prepare_threshold", None)
            with_option = {**cparams, "options": " ".join(filter(None, (
                cparams.get("options"), f"-c lock_timeout={self.milliseconds}")))}
            try:
                connection = dialect.connect(*cargs, **with_option)
                record.info[_MARK] = "startup"
            except Exception as error:  # the driver's OperationalError
                if _REJECTED_OPTION not in str(error):
                    raise
                connection = dialect.connect(*cargs, **cparams)
                record.info[_MARK] = "transaction"
            return connection
        if dialect.name in ("mysql", "mariadb"):
            connection = dialect.connect(*cargs, **cparams)
            # Whole seconds, at least 1. Metadata locks only (what DDL waits on, and what
            # queues the app's readers); innodb_lock_wait_timeout stays the server's.
            with contextlib.closing(connection.cursor()) as cursor:
                cursor.execute(f"SET SESSION lock_wait_timeout = {max(1, math.ceil(self.timeout))}")
            record.info[_MARK] = "session"
            return connection
        return None

    def begin(self, connection: sa.Connection) -> None:
        """ConnectionEvents.begin: a pooled PostgreSQL connection gets it per transaction."""
        if connection.info.get(_MARK) == "transaction":
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = {self.milliseconds}")

    def before_execute(self, connection: sa.Connection, *args: Any) -> None:
        """before_cursor_execute: say once when a statement runs without the timeout."""
        if self.warned or connection.dialect.name not in ("postgresql", "mysql", "mariadb"):
            return
        if _MARK not in connection.info:
            self.warned = True
            emit("ddl.lock_timeout_unavailable", "a migration statement runs on a connection"
                 " opened without RUNNER_DDL_LOCK_TIMEOUT (env.py makes its connection in a way"
                 " the runner cannot reach): it may wait on table locks without limit; let"
                 " env.py connect through the app's engine or an engine it creates",
                 level="warning")


@contextlib.contextmanager
def lock_timeout_on_connect(engines: list[sa.Engine], timeout: float) -> Iterator[None]:
    """While inside, every connection any engine opens gets the DDL lock timeout (0: none).

    `engines` (the app's) are emptied on entry, so no connection opened without the timeout
    is reused, and on exit, so the app never gets one that has it.
    """
    for engine in engines:
        engine.dispose()
    with contextlib.ExitStack() as stack:
        for engine in engines:
            stack.callback(engine.dispose)
        if timeout > 0:
            nets = _SafetyNets(timeout)
            for name, function in (("do_connect", nets.do_connect), ("begin", nets.begin),
                                   ("before_cursor_execute", nets.before_execute)):
                sa.event.listen(Engine, name, function)
                stack.callback(sa.event.remove, Engine, name, function)
        yield


@contextlib.contextmanager
def _watched(settings: Settings, migrations: Migrations, watch: StepWatch) -> Iterator[None]:
    """The lock timeout and the step watch, for the upgrade only, on every engine."""
    app = migrations.app.flask_app
    with app.app_context():
        engines = list(dict.fromkeys(app.extensions["migrate"].db.engines.values()))
    logger = logging.getLogger("alembic.runtime.migration")
    with contextlib.ExitStack() as stack:
        stack.enter_context(lock_timeout_on_connect(engines, settings.ddl_lock_timeout))
        for name, function in (("before_cursor_execute", watch.before_execute),
                               ("commit", watch.committed)):
            sa.event.listen(Engine, name, function)
            stack.callback(sa.event.remove, Engine, name, function)
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
    return "mysql" if error is not None and database.mysql_code(error) is not None else (
        "postgresql")


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


def _not_retried(settings: Settings, wait: _TableLockWait, driver: Driver) -> MigrationFailed:
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
               " that waited is rolled back)" + _invalid_indexes_hint(driver))
    return MigrationFailed(
        f"revision {wait.revision} waited {_timeout_text(settings)} for a table lock and"
        f" stopped; {why}. The database said: {wait.error}",
        revision=wait.revision, error=wait.error,
    )


_INVALID_INDEXES = (
    "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_index i"
    " JOIN pg_class c ON c.oid = i.indexrelid"
    " JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE NOT i.indisvalid AND n.nspname <> 'pg_catalog'"
    " AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1"
)


def _invalid_indexes_hint(driver: Driver) -> str:
    """Name the INVALID indexes an interrupted CREATE INDEX CONCURRENTLY leaves behind
    (read on the runner's own connection)."""
    if driver.backend != "postgresql":
        return ""
    try:
        with driver.reading() as cursor:
            cursor.execute(_INVALID_INDEXES)
            names = [row[0] for row in cursor.fetchall()]
    except Exception:  # only the hint is lost
        return ""
    if not names:
        return ""
    drops = "; ".join(f"DROP INDEX CONCURRENTLY {name}" for name in names)
    return f"; INVALID index(es) left by an interrupted CREATE INDEX CONCURRENTLY: {drops}"

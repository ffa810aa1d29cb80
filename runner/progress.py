"""What the server says about a running migration: the readings behind `migrate.progress`.

`read_postgresql` and `read_mysql` take one reading of the session(s) running the upgrade,
through a DB-API cursor (psycopg 3 or PyMySQL, rows as tuples) on a connection the runner
already holds (the lock's), never on a new one. `Reading.fields()` is the event's payload
and `Reading.text()` its one-line rendering for text logs.

The contract for the caller:

- A reading commits nothing and rolls nothing back. A query that fails raises (the
  driver's error): on PostgreSQL that leaves the transaction aborted, so the caller wraps
  each reading in `SAVEPOINT` ... `ROLLBACK TO SAVEPOINT`, which also releases the
  catalog locks (AccessShareLock on the views and catalogs read) that a reading would
  otherwise hold until the lock connection's transaction ends.
- PostgreSQL keeps a per-transaction copy of pg_stat_activity and of the progress views
  (the backend status snapshot, whatever `stats_fetch_consistency` says; a savepoint
  does not reset it): every reading starts with `pg_stat_clear_snapshot()`, so readings
  inside one long transaction do not repeat the first.
- Ages are measured with `clock_timestamp()`: inside a long transaction `now()` is the
  time the transaction began.
- Statements are cut to STATEMENT_LENGTH characters with their whitespace collapsed; they
  are not masked (the caller masks secrets).
- PostgreSQL, CREATE INDEX / REINDEX CONCURRENTLY: a reading is a query, and a query holds a
  snapshot while it runs. If one runs, in a transaction that stays open afterwards (the
  lock's), at the moment the index build lists the transactions with older snapshots
  (after its validation scan), the build then waits for that whole transaction to end,
  not just the query: with the upgrade waiting for the build, that is a deadlock no server
  detects (until the migration's lock_timeout fails the build, leaving an invalid index).
  A reading lasts well under a millisecond of server time; the window is small, not
  zero. tests/integration/test_progress_readings.py shows the mechanism.
- MariaDB/MySQL: INNODB_TRX and INNODB_LOCK_WAITS come from a cache InnoDB refreshes only
  when nobody has read it for 0.1 s: readings seconds apart see fresh data.

What each server offers is described on the functions.
"""

from __future__ import annotations

import contextlib
import math
import re
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

STATEMENT_LENGTH = 200
"""The most characters of a statement a reading carries (and `text()` prints)."""

MAX_CANDIDATES = 5
"""The most sessions a MariaDB/MySQL reading names as possible holders of a lock."""


class Cursor(Protocol):
    """The part of a DB-API cursor a reading uses; rows are sequences (tuples)."""

    def execute(self, operation: Any, parameters: Any = ..., /) -> object: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Any: ...


@dataclass(frozen=True, kw_only=True)
class Blocker:
    """A session that holds (or, for MariaDB without exact lock data, may hold) the lock
    the migration's statement waits for."""

    pid: int
    """PostgreSQL: the backend's pid; MySQL/MariaDB: the connection id (processlist ID)."""
    application_name: str | None = None
    """PostgreSQL's application_name (None when empty); MySQL has none."""
    user: str | None = None
    state: str | None = None
    """PostgreSQL: pg_stat_activity.state; MySQL: the processlist STATE, else its COMMAND."""
    xact_age: float | None = None
    """Seconds since its transaction began (None outside a transaction or when hidden)."""


@dataclass(frozen=True, kw_only=True)
class Reading:
    """What the server says about the migration's statement, at one moment."""

    server: str
    """'postgresql' or 'mysql' (MySQL and MariaDB)."""
    pid: int
    """The session read: PostgreSQL backend pid, MySQL/MariaDB connection id."""
    active: bool
    """It is running a statement (PostgreSQL state 'active'; MySQL COMMAND other than
    Sleep); otherwise `statement` is the last one it ran."""
    statement: str | None = None
    """The statement, whitespace collapsed, cut to STATEMENT_LENGTH characters."""
    statement_age: float | None = None
    """Seconds the running statement has run (None when not active)."""
    state: str | None = None
    """PostgreSQL pg_stat_activity.state; MySQL/MariaDB processlist STATE (None when empty)."""
    wait_event_type: str | None = None
    """PostgreSQL only."""
    wait_event: str | None = None
    """PostgreSQL only."""
    waiting_for: str | None = None
    """The lock the statement waits for, when it waits for one: PostgreSQL
    'Lock:<wait_event>'; MariaDB/MySQL the STATE ('Waiting for table metadata lock'...)
    or 'InnoDB row lock'."""
    blockers: tuple[Blocker, ...] = ()
    blocker_source: str | None = None
    """Where `blockers` come from: 'pg_blocking_pids', 'performance_schema.metadata_locks',
    'information_schema.METADATA_LOCK_INFO', 'information_schema.INNODB_LOCK_WAITS' (exact),
    or 'information_schema.INNODB_TRX' (candidates: the sessions in a transaction that
    began before the statement, which may or may not hold the lock)."""
    operation: str | None = None
    """PostgreSQL progress views' command: 'CREATE INDEX [CONCURRENTLY]',
    'REINDEX [CONCURRENTLY]', 'CLUSTER', 'VACUUM FULL'."""
    relation: str | None = None
    """The index being built (CREATE INDEX/REINDEX), where known."""
    table: str | None = None
    """The table the operation works on (PostgreSQL progress views)."""
    phase: str | None = None
    """PostgreSQL progress phase; MariaDB 'stage N of M'."""
    percent: float | None = None
    """Progress of the current phase (PostgreSQL) or stage (MariaDB), 0-100."""
    done: int | None = None
    total: int | None = None
    unit: str | None = None
    """What done/total count: 'blocks', 'tuples', 'transactions', 'partitions', 'indexes'."""

    @property
    def candidates(self) -> bool:
        """The blockers are sessions that may hold the lock, not sessions known to."""
        return self.blocker_source == INNODB_TRX_SOURCE

    def fields(self) -> dict[str, Any]:
        """The reading as JSON-serializable fields for the `migrate.progress` event."""
        data = asdict(self)
        data["statement"] = cut_statement(self.statement)
        data["blockers"] = [asdict(blocker) for blocker in self.blockers]
        if self.percent is not None:
            data["percent"] = round(self.percent, 1)
        return data

    def text(self, revision: str, elapsed: float, run_elapsed: float) -> str:
        """One readable line: the revision, what the server says, the seconds in the
        revision (and in the run, when longer). For example
        `3f2a1b9c building ix_entry_account_id: scanning table 45% (12000/26000 blocks), 2m10s`
        or `3f2a1b9c waiting for a lock (Lock:relation) held by pid 4242 (psql, idle in
        transaction for 3m02s): ALTER TABLE entry ..., 0m12s`."""
        statement = cut_statement(self.statement)
        if self.waiting_for is not None:
            said = f"waiting for a lock ({self.waiting_for})"
            if self.blockers:
                names = [self._blocker_text(blocker) for blocker in self.blockers]
                if self.candidates:
                    said += " perhaps held by " + " or ".join(names)
                else:
                    said += " held by " + " and ".join(names)
            said += _statement_suffix(statement)
        elif self.operation is not None:
            said = self._operation_text()
        elif self.phase is not None:
            said = f"{self.state or 'running'}: {self.phase}"
            if self.percent is not None:
                said += f", {_percent(self.percent)}"
            said += _statement_suffix(statement)
        elif self.active:
            detail = self.state if self.server == "mysql" else _wait(self)
            said = "running" + (f" ({detail})" if detail else "") + _statement_suffix(statement)
        else:
            said = "between statements" + (f" ({self.state})" if self.state else "")
            if statement:
                said += f", last: {statement}"
        return f"{revision} {said}, {_elapsed_text(elapsed, run_elapsed)}"

    def _operation_text(self) -> str:
        operation = self.operation or ""
        if operation.startswith("CREATE INDEX"):
            said = (f"building {self.relation}" if self.relation
                    else _on("building an index", "on", self.table))
        elif operation.startswith("REINDEX"):
            said = (f"rebuilding {self.relation}" if self.relation
                    else _on("reindexing", "", self.table))
        elif operation == "CLUSTER":
            said = _on("clustering", "", self.table)
        else:
            said = _on("rewriting", "", self.table) + f" ({operation})"
        if self.phase:
            said += ": " + self.phase.removeprefix("building index: ")
        if self.percent is not None:
            said += f" {_percent(self.percent)}"
        if self.done is not None and self.total is not None:
            said += f" ({self.done}/{self.total} {self.unit})"
        elif self.done is not None:
            said += f" ({self.done} {self.unit})"
        return said

    def _blocker_text(self, blocker: Blocker) -> str:
        label = "connection" if self.server == "mysql" else "pid"
        who = blocker.application_name if self.server == "postgresql" else None
        details = [detail for detail in (who or blocker.user, _holding(blocker)) if detail]
        return f"{label} {blocker.pid}" + (f" ({', '.join(details)})" if details else "")


def progress_text(
    reading: Reading | None, revision: str, elapsed: float, run_elapsed: float
) -> str:
    """`reading.text(...)`, or a line without the server's view when there is no reading
    (the migration's sessions were not found)."""
    if reading is not None:
        return reading.text(revision, elapsed, run_elapsed)
    return f"{revision} running, {_elapsed_text(elapsed, run_elapsed)}"


def cut_statement(statement: str | None) -> str | None:
    """The statement on one line (whitespace collapsed), at most STATEMENT_LENGTH
    characters: a longer one ends with '...' inside that length. None or blank: None."""
    if statement is None:
        return None
    flat = " ".join(statement.split())
    if not flat:
        return None
    if len(flat) <= STATEMENT_LENGTH:
        return flat
    return flat[: STATEMENT_LENGTH - 3] + "..."


def format_duration(seconds: float) -> str:
    """'0m12s', '3m02s', '1h04m09s': whole seconds, rounded down."""
    whole = max(0, math.floor(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s"


def _elapsed_text(elapsed: float, run_elapsed: float) -> str:
    said = format_duration(elapsed)
    if math.floor(run_elapsed) > math.floor(elapsed):
        said += f" (run {format_duration(run_elapsed)})"
    return said


def _statement_suffix(statement: str | None) -> str:
    return f": {statement}" if statement else ""


def _percent(percent: float) -> str:
    return f"{math.floor(percent)}%"


def _on(verb: str, preposition: str, table: str | None) -> str:
    """'rewriting entry', 'building an index on entry'; the verb alone without a table."""
    if not table:
        return verb
    return " ".join(word for word in (verb, preposition, table) if word)


def _wait(reading: Reading) -> str | None:
    if reading.wait_event_type and reading.wait_event:
        return f"{reading.wait_event_type}:{reading.wait_event}"
    return reading.wait_event_type or reading.wait_event


def _holding(blocker: Blocker) -> str | None:
    """'idle in transaction for 3m02s', 'Sleep, in a transaction for 0m05s', 'active'."""
    if blocker.xact_age is None:
        return blocker.state
    age = format_duration(blocker.xact_age)
    if blocker.state is None:
        return f"in a transaction for {age}"
    if "transaction" in blocker.state:
        return f"{blocker.state} for {age}"
    return f"{blocker.state}, in a transaction for {age}"


# --- PostgreSQL -----------------------------------------------------------------------------

PROGRESS_VIEWS_VERSION = 120000
"""server_version_num from which pg_stat_progress_create_index and _cluster exist."""

POSTGRESQL_CLEAR_SNAPSHOT = "SELECT pg_stat_clear_snapshot()"
"""Drop this transaction's copy of the activity and progress views, so that the next query
reads them afresh (without it, a second reading in one transaction repeats the first)."""

POSTGRESQL_ACTIVITY = """
SELECT a.pid, a.state, a.wait_event_type, a.wait_event, left(a.query, 2000),
       CASE WHEN a.state = 'active'
            THEN extract(epoch FROM clock_timestamp() - a.query_start)::float8 END,
       pg_blocking_pids(a.pid), current_setting('server_version_num')::int
FROM unnest(%s::int[]) WITH ORDINALITY AS ours(pid, position)
JOIN pg_stat_activity AS a ON a.pid = ours.pid
ORDER BY a.state IS NOT DISTINCT FROM 'active' DESC, ours.position
LIMIT 1
"""
"""The migration's session to read, given its backends' pids: the one running a statement,
else the first found; its state, wait event, statement (the last one when idle), seconds
the running statement has run, the pids that block it (pg_blocking_pids: sessions
holding a conflicting lock, or ahead of it in the lock's queue), and the server's version
(the progress views came with PostgreSQL 12)."""

POSTGRESQL_BLOCKERS = """
SELECT ours.pid, nullif(a.application_name, ''), a.usename, a.state,
       extract(epoch FROM clock_timestamp() - a.xact_start)::float8
FROM unnest(%s::int[]) WITH ORDINALITY AS ours(pid, position)
LEFT JOIN pg_stat_activity AS a ON a.pid = ours.pid
ORDER BY ours.position
"""
"""Each blocking pid's application_name, user, state and transaction age in seconds.
Another role's session shows its pid, user and application_name only, unless the reading
role has pg_read_all_stats; one that ended since shows its pid alone."""

POSTGRESQL_CREATE_INDEX_PROGRESS = """
SELECT p.command, p.phase,
       CASE WHEN p.index_relid <> 0 THEN p.index_relid::regclass::text END,
       p.relid::regclass::text,
       p.blocks_done, p.blocks_total, p.tuples_done, p.tuples_total,
       p.lockers_done, p.lockers_total, p.partitions_done, p.partitions_total
FROM pg_stat_progress_create_index AS p
WHERE p.pid = %s
"""
"""CREATE INDEX / REINDEX progress (PostgreSQL 12+): the phase and its counters (blocks,
tuples, lockers waited for, partitions). index_relid is 0 during a plain CREATE INDEX: the
index's name then comes from the statement."""

POSTGRESQL_CLUSTER_PROGRESS = """
SELECT c.command, c.phase, c.relid::regclass::text,
       c.heap_blks_scanned, c.heap_blks_total, c.heap_tuples_scanned, c.heap_tuples_written,
       c.index_rebuild_count,
       (SELECT count(*) FROM pg_index AS i WHERE i.indrelid = c.relid)
FROM pg_stat_progress_cluster AS c
WHERE c.pid = %s
"""
"""CLUSTER / VACUUM FULL progress (PostgreSQL 12+): the phase, heap blocks scanned of the
total (sequential scan), tuples scanned and written, indexes rebuilt of the table's."""

_INDEX_NAME = re.compile(
    r"""CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?
        (?!ON\s)("(?:[^"]|"")+"|[^\s(]+)""",
    re.IGNORECASE | re.VERBOSE,
)


def read_postgresql(cursor: Cursor, backend_pids: Sequence[int]) -> Reading | None:
    """Read the migration's session among `backend_pids` (its connections'
    pg_backend_pid()): the one running a statement, else the first found. None when none of
    them is connected. 2 to 5 short queries; the progress views only while it is active,
    the blockers only when pg_blocking_pids() names some."""
    if not backend_pids:
        return None
    cursor.execute(POSTGRESQL_CLEAR_SNAPSHOT)
    cursor.execute(POSTGRESQL_ACTIVITY, (list(backend_pids),))
    row = cursor.fetchone()
    if row is None:
        return None
    pid, state, wait_event_type, wait_event, query, statement_age, blocking, version = row
    statement = cut_statement(query)
    waiting_for = f"Lock:{wait_event}" if wait_event_type == "Lock" else None
    blockers: tuple[Blocker, ...] = ()
    blocking_pids = list(dict.fromkeys(blocking or ()))  # parallel workers repeat their leader
    if blocking_pids:
        cursor.execute(POSTGRESQL_BLOCKERS, (blocking_pids,))
        blockers = tuple(
            Blocker(pid=int(blocker_pid), application_name=application_name, user=user,
                    state=blocker_state, xact_age=xact_age)
            for blocker_pid, application_name, user, blocker_state, xact_age
            in cursor.fetchall()
        )
    reading = Reading(
        server="postgresql", pid=int(pid), active=state == "active", statement=statement,
        statement_age=statement_age, state=state, wait_event_type=wait_event_type,
        wait_event=wait_event, waiting_for=waiting_for, blockers=blockers,
        blocker_source="pg_blocking_pids" if blockers else None,
    )
    if not reading.active or version < PROGRESS_VIEWS_VERSION:
        return reading
    return _postgresql_progress(cursor, reading)


def _postgresql_progress(cursor: Cursor, reading: Reading) -> Reading:
    """The reading with the progress of its CREATE INDEX, CLUSTER or VACUUM FULL, if any."""
    cursor.execute(POSTGRESQL_CREATE_INDEX_PROGRESS, (reading.pid,))
    row = cursor.fetchone()
    if row is not None:
        (command, phase, index, table, blocks_done, blocks_total, tuples_done, tuples_total,
         lockers_done, lockers_total, partitions_done, partitions_total) = row
        if index is None and reading.statement:
            found = _INDEX_NAME.search(reading.statement)
            index = found.group(1) if found else None
        done, total, unit = _first_counted(
            (blocks_done, blocks_total, "blocks"), (tuples_done, tuples_total, "tuples"),
            (lockers_done, lockers_total, "transactions"),
            (partitions_done, partitions_total, "partitions"),
        )
        return _with_progress(reading, command, phase, index, table, done, total, unit)
    cursor.execute(POSTGRESQL_CLUSTER_PROGRESS, (reading.pid,))
    row = cursor.fetchone()
    if row is None:
        return reading
    (command, phase, table, blocks_scanned, blocks_total, tuples_scanned, tuples_written,
     indexes_rebuilt, indexes) = row
    done, total, unit = None, None, None
    if phase == "seq scanning heap":
        done, total, unit = blocks_scanned, blocks_total, "blocks"
    elif phase == "index scanning heap":
        done, unit = tuples_scanned, "tuples"  # in index order: no total to compare with
    elif phase == "writing new heap":
        # After the sort every scanned tuple gets written (CLUSTER with a sort).
        done, total, unit = tuples_written, tuples_scanned or None, "tuples"
    elif phase == "rebuilding index":
        done, total, unit = indexes_rebuilt, indexes, "indexes"
    return _with_progress(reading, command, phase, None, table, done, total, unit)


def _first_counted(
    *counters: tuple[int | None, int | None, str],
) -> tuple[int | None, int | None, str | None]:
    """The first (done, total, unit) with a total above 0: the phase's own counter."""
    for done, total, unit in counters:
        if total:
            return done, total, unit
    return None, None, None


def _with_progress(
    reading: Reading, operation: str, phase: str | None, relation: str | None,
    table: str | None, done: int | None, total: int | None, unit: str | None,
) -> Reading:
    percent = None
    if done is not None and total:
        percent = min(100.0, 100.0 * done / total)
    return replace(reading, operation=operation, phase=phase, relation=relation, table=table,
                    done=None if done is None else int(done),
                    total=None if total is None else int(total),
                    unit=unit if done is not None else None, percent=percent)


# --- MySQL / MariaDB ------------------------------------------------------------------------

INNODB_TRX_SOURCE = "information_schema.INNODB_TRX"

MYSQL_FEATURES = """
SELECT 'PROCESSLIST', COLUMN_NAME FROM information_schema.COLUMNS
WHERE TABLE_SCHEMA = 'information_schema' AND TABLE_NAME = 'PROCESSLIST'
  AND COLUMN_NAME IN ('STAGE', 'MAX_STAGE', 'PROGRESS', 'TIME_MS')
UNION ALL
SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES
WHERE (TABLE_SCHEMA = 'information_schema'
       AND TABLE_NAME IN ('METADATA_LOCK_INFO', 'INNODB_LOCK_WAITS'))
   OR (TABLE_SCHEMA = 'performance_schema' AND TABLE_NAME = 'metadata_locks')
"""
"""What this server has, asked once per connection: MariaDB's processlist columns STAGE,
MAX_STAGE, PROGRESS and TIME_MS (MySQL has none of them), MariaDB's METADATA_LOCK_INFO
(the metadata_lock_info plugin, not loaded by default), INNODB_LOCK_WAITS (MariaDB; MySQL
8 moved it to performance_schema.data_lock_waits) and performance_schema.metadata_locks
(present on both; filled only when performance_schema is on with the
wait/lock/metadata/sql/mdl instrument: MySQL 8's default, not MariaDB's)."""

MARIADB_PROCESSLIST = """
SELECT ID, COMMAND, STATE, LEFT(INFO, 2000), TIME_MS / 1000, STAGE, MAX_STAGE, PROGRESS
FROM information_schema.PROCESSLIST
WHERE FIND_IN_SET(ID, %s)
"""
"""The migration's sessions (ids comma-separated) on MariaDB: command, state, statement,
seconds in the current command, and the progress of ALTER TABLE ... COPY, LOAD DATA and
the like: STAGE (1-based, 0 without a progress report) of MAX_STAGE, and PROGRESS, the
percent of the current stage (SHOW PROCESSLIST's Progress is of all stages)."""

MYSQL_PROCESSLIST = """
SELECT ID, COMMAND, STATE, LEFT(INFO, 2000), TIME, NULL, NULL, NULL
FROM information_schema.PROCESSLIST
WHERE FIND_IN_SET(ID, %s)
"""
"""The migration's sessions on MySQL, whose processlist has no progress columns and
counts time in whole seconds."""

MYSQL_PERFORMANCE_SCHEMA_HOLDERS = """
SELECT DISTINCT holder.PROCESSLIST_ID
FROM performance_schema.threads AS waiter
JOIN performance_schema.metadata_locks AS pending
  ON pending.OWNER_THREAD_ID = waiter.THREAD_ID AND pending.LOCK_STATUS = 'PENDING'
JOIN performance_schema.metadata_locks AS granted
  ON granted.OBJECT_TYPE = pending.OBJECT_TYPE
 AND granted.OBJECT_SCHEMA <=> pending.OBJECT_SCHEMA
 AND granted.OBJECT_NAME <=> pending.OBJECT_NAME
 AND granted.LOCK_STATUS = 'GRANTED' AND granted.OWNER_THREAD_ID <> waiter.THREAD_ID
JOIN performance_schema.threads AS holder ON holder.THREAD_ID = granted.OWNER_THREAD_ID
WHERE waiter.PROCESSLIST_ID = %s AND holder.PROCESSLIST_ID IS NOT NULL
ORDER BY holder.PROCESSLIST_ID
"""
"""The connections holding a granted metadata lock on the object (table, schema, backup
or global lock) the session's pending metadata lock waits for. Exact; empty when
performance_schema or its MDL instrument is off."""

MARIADB_METADATA_LOCK_INFO_HOLDERS = """
SELECT DISTINCT other.THREAD_ID
FROM information_schema.METADATA_LOCK_INFO AS mine
JOIN information_schema.METADATA_LOCK_INFO AS other
  ON other.LOCK_TYPE = mine.LOCK_TYPE AND other.TABLE_SCHEMA = mine.TABLE_SCHEMA
 AND other.TABLE_NAME = mine.TABLE_NAME AND other.THREAD_ID <> mine.THREAD_ID
WHERE mine.THREAD_ID = %s AND mine.LOCK_TYPE = 'Table metadata lock'
ORDER BY other.THREAD_ID
"""
"""The connections holding a metadata lock on a table the session holds one on (an ALTER
holds a shared-upgradable lock on its table while it waits to upgrade it). The plugin
lists granted locks only, so sessions queued behind the ALTER are not named."""

MYSQL_ROW_LOCK_BLOCKERS = """
SELECT DISTINCT blocking.trx_mysql_thread_id
FROM information_schema.INNODB_TRX AS waiting
JOIN information_schema.INNODB_LOCK_WAITS AS waits ON waits.requesting_trx_id = waiting.trx_id
JOIN information_schema.INNODB_TRX AS blocking ON blocking.trx_id = waits.blocking_trx_id
WHERE waiting.trx_mysql_thread_id = %s
ORDER BY blocking.trx_mysql_thread_id
"""
"""The connections whose transactions hold the InnoDB row locks the session waits for."""

MYSQL_SESSIONS = """
SELECT p.ID, p.USER, p.COMMAND, p.STATE, TIMESTAMPDIFF(SECOND, t.trx_started, NOW())
FROM information_schema.PROCESSLIST AS p
LEFT JOIN information_schema.INNODB_TRX AS t ON t.trx_mysql_thread_id = p.ID
WHERE FIND_IN_SET(p.ID, %s)
ORDER BY p.ID
"""
"""Sessions by id (comma-separated): user, command, state, and the age in seconds of
their InnoDB transaction (whole seconds: trx_started has no fraction)."""

MYSQL_TRANSACTION_CANDIDATES = f"""
SELECT p.ID, p.USER, p.COMMAND, p.STATE, TIMESTAMPDIFF(SECOND, t.trx_started, NOW())
FROM information_schema.INNODB_TRX AS t
JOIN information_schema.PROCESSLIST AS p ON p.ID = t.trx_mysql_thread_id
WHERE t.trx_mysql_thread_id <> %s AND t.trx_started <= NOW() - INTERVAL %s SECOND
AND p.DB <=> (SELECT DB FROM information_schema.PROCESSLIST WHERE ID = %s)
ORDER BY t.trx_started, p.ID
LIMIT {MAX_CANDIDATES}
"""
"""Without exact metadata lock data (a stock MariaDB: performance_schema off, no
metadata_lock_info plugin): the other sessions of the same database with an InnoDB
transaction that began no later than the waiting statement (the second placeholder: its
whole seconds so far; the third: the waiting session again), oldest first. A session
idle in a transaction that read the table is among them; so may
be unrelated ones, and a session holding the table through a non-InnoDB table or LOCK
TABLES without a transaction is missed."""


@dataclass(frozen=True)
class _MysqlServer:
    """What read_mysql may ask this server (MYSQL_FEATURES)."""

    stages: bool
    metadata_lock_info: bool
    innodb_lock_waits: bool
    performance_schema_mdl: bool


_servers: weakref.WeakKeyDictionary[Any, _MysqlServer] = weakref.WeakKeyDictionary()


def _mysql_server(cursor: Cursor) -> _MysqlServer:
    connection = getattr(cursor, "connection", None)
    try:
        return _servers[connection]
    except (KeyError, TypeError):
        pass
    cursor.execute(MYSQL_FEATURES)
    found = {(str(schema).lower(), str(name).upper()) for schema, name in cursor.fetchall()}
    columns = {name for schema, name in found if schema == "processlist"}
    server = _MysqlServer(
        stages={"STAGE", "MAX_STAGE", "PROGRESS", "TIME_MS"} <= columns,
        metadata_lock_info=("information_schema", "METADATA_LOCK_INFO") in found,
        innodb_lock_waits=("information_schema", "INNODB_LOCK_WAITS") in found,
        performance_schema_mdl=("performance_schema", "METADATA_LOCKS") in found,
    )
    # None, or a connection that takes no weak reference: ask again each time.
    with contextlib.suppress(TypeError):
        _servers[connection] = server
    return server


def read_mysql(cursor: Cursor, connection_ids: Sequence[int]) -> Reading | None:
    """Read the migration's session among `connection_ids` (its connections'
    CONNECTION_ID()): the one running a statement, else the first found. None when none of
    them is connected.

    The processlist gives the state and statement; MariaDB adds STAGE/MAX_STAGE/PROGRESS
    for ALTER TABLE with ALGORITHM=COPY (stage 1 'copy to tmp table', stage 2 'Enabling
    keys'), LOAD DATA and the like (not for in-place ALTERs). A statement waiting for a
    metadata lock gets its holders from performance_schema.metadata_locks when that is on
    (MySQL 8 by default), else from MariaDB's METADATA_LOCK_INFO when the plugin is
    loaded, else, on a stock MariaDB, candidates from INNODB_TRX (see
    MYSQL_TRANSACTION_CANDIDATES). One waiting for InnoDB row locks gets its blockers from
    INNODB_LOCK_WAITS (MariaDB; not on MySQL 8). 2 queries (plus 1 the first time on a
    connection), 2 to 3 more while it waits for a lock."""
    if not connection_ids:
        return None
    server = _mysql_server(cursor)
    ids = ",".join(str(int(connection_id)) for connection_id in connection_ids)
    cursor.execute(MARIADB_PROCESSLIST if server.stages else MYSQL_PROCESSLIST, (ids,))
    rows = {int(row[0]): row for row in cursor.fetchall()}
    found = [rows[int(connection_id)] for connection_id in connection_ids
             if int(connection_id) in rows]
    if not found:
        return None
    row = next((row for row in found if row[1] != "Sleep"), found[0])
    pid, command, state, info, seconds, stage, max_stage, progress = row
    active = command != "Sleep"
    state = state or None
    reading = Reading(
        server="mysql", pid=int(pid), active=active, statement=cut_statement(info),
        statement_age=float(seconds) if active and seconds is not None else None,
        state=state,
    )
    if stage:
        reading = replace(reading, phase=f"stage {stage} of {max(max_stage or 0, stage)}",
                           percent=None if progress is None else float(progress))
    if not active:
        return reading
    return _mysql_blockers(cursor, server, reading)


def _mysql_blockers(cursor: Cursor, server: _MysqlServer, reading: Reading) -> Reading:
    """The reading with the lock its statement waits for and who holds it, if it waits."""
    state = reading.state or ""
    holders: list[int] = []
    source = None
    if state.startswith("Waiting for") and state.endswith("lock"):
        metadata = "metadata lock" in state
        if server.performance_schema_mdl:
            holders = _ids(cursor, MYSQL_PERFORMANCE_SCHEMA_HOLDERS, (reading.pid,))
            source = "performance_schema.metadata_locks"
        if not holders and metadata and server.metadata_lock_info:
            holders = _ids(cursor, MARIADB_METADATA_LOCK_INFO_HOLDERS, (reading.pid,))
            source = "information_schema.METADATA_LOCK_INFO"
        if not holders and metadata:
            waited = math.floor(reading.statement_age or 0)
            cursor.execute(MYSQL_TRANSACTION_CANDIDATES, (reading.pid, waited, reading.pid))
            return replace(reading, waiting_for=state,
                            **_blockers(cursor.fetchall(), INNODB_TRX_SOURCE))
        return replace(reading, waiting_for=state, **_sessions(cursor, holders, source))
    if server.innodb_lock_waits:
        holders = _ids(cursor, MYSQL_ROW_LOCK_BLOCKERS, (reading.pid,))
        if holders:
            return replace(reading, waiting_for="InnoDB row lock", **_sessions(
                cursor, holders, "information_schema.INNODB_LOCK_WAITS"))
    return reading


def _ids(cursor: Cursor, query: str, parameters: tuple[Any, ...]) -> list[int]:
    cursor.execute(query, parameters)
    return [int(row[0]) for row in cursor.fetchall()]


def _sessions(cursor: Cursor, ids: list[int], source: str | None) -> dict[str, Any]:
    if not ids:
        return {}
    cursor.execute(MYSQL_SESSIONS, (",".join(map(str, ids)),))
    return _blockers(cursor.fetchall(), source)


def _blockers(rows: Iterable[Sequence[Any]], source: str | None) -> dict[str, Any]:
    blockers = tuple(
        Blocker(pid=int(pid), user=user or None, state=state or command or None,
                xact_age=None if age is None else float(age))
        for pid, user, command, state, age in rows
    )
    return {"blockers": blockers, "blocker_source": source if blockers else None}

"""The server readings behind `migrate.progress`, on the real servers.

Each test runs a statement the way a migration does, on a connection of its own, and
reads it from another one, the way the runner reads its migration from the lock's
connection. Where the runner would read inside the lock connection's open transaction,
so does the test (`PgReader`: a SAVEPOINT around each reading).
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
import sqlalchemy as sa

from runner.progress import (
    INNODB_TRX_SOURCE,
    Reading,
    read_mysql,
    read_postgresql,
)
from support import (
    INNODB_TRX,
    REQUIRE_DATABASES,
    PrivateMariadb,
    _private_server,
    execute,
    hold_table,
    server_database,
    unavailable,
)

DEADLINE = 30.0
"""Seconds a test waits for the server to show what it waits for."""

INNODB_CACHE_IDLE = 0.15
"""Seconds between MariaDB readings that need InnoDB's information_schema tables afresh:
InnoDB refreshes their cache only when it has not been read for 0.1 s."""


# --- connections -----------------------------------------------------------------------------


def pg_connect(url: str, autocommit: bool = True, **options: Any) -> psycopg.Connection[Any]:
    """A psycopg connection to the database of a SQLAlchemy-style URL."""
    parts = sa.engine.make_url(url)
    return psycopg.connect(host=parts.host, port=parts.port, user=parts.username,
                           password=parts.password, dbname=parts.database,
                           autocommit=autocommit, **options)


def my_connect(url: str) -> pymysql.connections.Connection[Any]:
    """A PyMySQL connection (autocommit) to the database of a SQLAlchemy-style URL."""
    parts = sa.engine.make_url(url)
    return pymysql.connect(host=parts.host, port=parts.port or 3306, user=parts.username,
                           password=parts.password or "", database=parts.database or None,
                           autocommit=True)


class PgReader:
    """The runner's lock connection: one transaction open throughout, each reading in a
    SAVEPOINT rolled back after it."""

    def __init__(self, url: str) -> None:
        self.connection = pg_connect(url, autocommit=False)
        self.cursor = self.connection.cursor()
        self.pid = self.connection.info.backend_pid
        self.cursor.execute("SELECT 1")  # the transaction begins

    def take(self, pids: Sequence[int]) -> Reading | None:
        self.cursor.execute("SAVEPOINT progress")
        try:
            return read_postgresql(self.cursor, pids)
        finally:
            self.cursor.execute("ROLLBACK TO SAVEPOINT progress")

    def close(self) -> None:
        self.connection.rollback()
        self.connection.close()


@contextlib.contextmanager
def pg_reader(url: str) -> Iterator[PgReader]:
    reader = PgReader(url)
    try:
        yield reader
    finally:
        reader.close()


class Running:
    """A statement running on a connection of its own, in a thread, as a migration's."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.finished = threading.Event()
        self.error: BaseException | None = None


@contextlib.contextmanager
def running_pg(url: str, statement: str) -> Iterator[Running]:
    """Run `statement` (autocommit) in a thread; cancel it on the way out if still running."""
    connection = pg_connect(url)
    run = Running(connection.info.backend_pid)

    def work() -> None:
        try:
            connection.execute(statement.encode())
        except BaseException as error:
            run.error = error
        finally:
            run.finished.set()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        yield run
    finally:
        if not run.finished.is_set():
            connection.cancel()
        thread.join(DEADLINE)
        connection.close()


@contextlib.contextmanager
def running_my(url: str, statement: str) -> Iterator[Running]:
    """Run `statement` in a thread; KILL QUERY it on the way out if still running."""
    connection = my_connect(url)
    run = Running(connection.thread_id())

    def work() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
        except BaseException as error:
            run.error = error
        finally:
            run.finished.set()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        yield run
    finally:
        if not run.finished.is_set():
            killer = my_connect(url)
            with killer.cursor() as cursor:
                cursor.execute(f"KILL QUERY {run.pid}")
            killer.close()
        thread.join(DEADLINE)
        connection.close()


def until(
    take: Callable[[], Reading | None], wanted: Callable[[Reading], bool],
    timeout: float = DEADLINE, pause: float = 0.02,
) -> Reading:
    """Take readings until one is `wanted`, `pause` seconds apart; fail with the last one
    after `timeout`."""
    deadline = time.monotonic() + timeout
    pausing = threading.Event()
    last = None
    while time.monotonic() < deadline:
        last = take()
        if last is not None and wanted(last):
            return last
        pausing.wait(pause)
    pytest.fail(f"the server never showed it; last reading: {last}")


def readings_while(run: Running, take: Callable[[], Reading | None]) -> list[Reading]:
    """Every reading taken, one after the other, until `run` finishes."""
    taken = []
    deadline = time.monotonic() + 120
    while not run.finished.wait(0.02):
        reading = take()
        if reading is not None:
            taken.append(reading)
        assert time.monotonic() < deadline, "the statement never finished"
    assert run.error is None, run.error
    return taken


def rising(percents: list[float]) -> bool:
    """Never falling, and rising at least twice."""
    return all(a <= b for a, b in itertools.pairwise(percents)) and len(
        set(percents)) >= 3


# --- PostgreSQL ------------------------------------------------------------------------------


@pytest.mark.postgresql
def test_postgresql_blocked_statement_names_the_session_holding_its_table(
    postgresql_url: str,
) -> None:
    execute(postgresql_url, "CREATE TABLE entry (id int)")
    started = time.monotonic()
    with (
        hold_table(postgresql_url + "?application_name=holding-session",
                   statement="SELECT * FROM entry") as holder_pid,
        pg_reader(postgresql_url) as reader,
    ):
        reader.cursor.execute(
            "SELECT pid FROM pg_locks WHERE relation = 'entry'::regclass AND granted")
        assert [row[0] for row in reader.cursor.fetchall()] == [holder_pid]
        with running_pg(postgresql_url, "ALTER TABLE entry ADD COLUMN note text") as alter:
            reading = until(lambda: reader.take([alter.pid]), lambda r: bool(r.blockers))
    assert alter.pid != reader.pid
    assert (reading.pid, reading.active, reading.state) == (alter.pid, True, "active")
    assert (reading.wait_event_type, reading.wait_event) == ("Lock", "relation")
    assert reading.waiting_for == "Lock:relation"
    assert reading.statement == "ALTER TABLE entry ADD COLUMN note text"
    assert reading.blocker_source == "pg_blocking_pids" and not reading.candidates
    (blocker,) = reading.blockers
    assert blocker.pid == holder_pid
    assert blocker.application_name == "holding-session"
    assert (blocker.user, blocker.state) == ("postgres", "idle in transaction")
    # Its transaction began before the ALTER, and within this test.
    assert reading.statement_age is not None and blocker.xact_age is not None
    assert reading.statement_age <= blocker.xact_age <= time.monotonic() - started
    fields = reading.fields()
    assert fields["blockers"][0]["pid"] == holder_pid
    assert fields["waiting_for"] == "Lock:relation"
    text = reading.text("3f2a1b9c", 12, 12)
    assert text.startswith(
        f"3f2a1b9c waiting for a lock (Lock:relation) held by pid {holder_pid}"
        " (holding-session, idle in transaction for 0m")
    assert text.endswith(": ALTER TABLE entry ADD COLUMN note text, 0m12s")


@pytest.mark.postgresql
def test_postgresql_readings_in_one_transaction_follow_the_server(postgresql_url: str) -> None:
    """Without pg_stat_clear_snapshot() a second reading in the lock connection's
    transaction would repeat the first: the plain query below shows that it does."""
    execute(postgresql_url, "CREATE TABLE entry (id int)", "CREATE TABLE marker (id int)")
    with pg_reader(postgresql_url) as reader, contextlib.ExitStack() as holding:
        reader.cursor.execute("INSERT INTO marker VALUES (1)")
        holding.enter_context(hold_table(postgresql_url, statement="SELECT * FROM entry"))
        with running_pg(postgresql_url, "ALTER TABLE entry ADD COLUMN note text") as alter:
            first = until(lambda: reader.take([alter.pid]), lambda r: bool(r.blockers))
            holding.close()  # the holder's transaction ends: the ALTER goes through
            assert alter.finished.wait(DEADLINE) and alter.error is None
            reader.cursor.execute("SELECT state FROM pg_stat_activity WHERE pid = %s",
                                  (alter.pid,))
            stale = reader.cursor.fetchone()
            second = reader.take([alter.pid])
        status = reader.connection.info.transaction_status
    assert stale == ("active",), "this transaction's copy of pg_stat_activity went stale"
    assert (first.active, first.waiting_for) == (True, "Lock:relation")
    assert second is not None
    assert (second.active, second.state, second.waiting_for) == (False, "idle", None)
    assert second.blockers == () and second.statement_age is None
    assert second.statement == "ALTER TABLE entry ADD COLUMN note text"
    assert status == psycopg.pq.TransactionStatus.INTRANS
    with pg_connect(postgresql_url) as check:
        # The readings committed nothing: the reader's rollback took the row away.
        assert check.execute("SELECT count(*) FROM marker").fetchone() == (0,)
    assert second.text("3f2a1b9c", 5, 5) == (
        "3f2a1b9c between statements (idle), last: ALTER TABLE entry ADD COLUMN note text,"
        " 0m05s")


@pytest.mark.postgresql
def test_postgresql_no_reading_without_the_session(postgresql_url: str) -> None:
    gone = pg_connect(postgresql_url)
    gone_pid = gone.info.backend_pid
    gone.close()
    with pg_reader(postgresql_url) as reader:
        assert reader.take([]) is None
        # The backend may take a moment to leave pg_stat_activity after the close.
        deadline = time.monotonic() + DEADLINE
        while (reading := reader.take([gone_pid])) is not None:
            assert time.monotonic() < deadline, reading
            time.sleep(0.02)


ROWS = 2_000_000
"""Rows in the large PostgreSQL table: an index build of about two seconds here."""


@pytest.fixture(scope="module")
def large_postgresql_table() -> Iterator[str]:
    """A database with table `big` (id, v, s text) of ROWS rows, shared by the module."""
    with server_database("postgresql") as url:
        execute(url, "CREATE TABLE big (id int, v int, s text)",
                f"INSERT INTO big SELECT g, (g::bigint * 7919 % 1000003)::int, md5(g::text)"
                f" FROM generate_series(1, {ROWS}) AS g")
        yield url


def autocommit_reader(url: str) -> tuple[psycopg.Connection[Any], Callable[[int], Reading | None]]:
    """A reading connection outside any transaction.

    The index and rewrite tests read in autocommit: a reading inside a transaction kept
    open can stall CREATE INDEX CONCURRENTLY (see the test after these), which is what
    the runner must avoid, not what these tests are about.
    """
    connection = pg_connect(url)
    cursor = connection.cursor()
    return connection, lambda pid: read_postgresql(cursor, [pid])


@pytest.mark.postgresql
def test_postgresql_create_index_concurrently_reports_a_rising_percent(
    large_postgresql_table: str,
) -> None:
    url = large_postgresql_table
    connection, take = autocommit_reader(url)
    try:
        statement = "CREATE INDEX CONCURRENTLY ix_big_s ON big (s)"
        with running_pg(url, statement) as build:
            first = until(lambda: take(build.pid), lambda r: r.operation is not None)
            taken = [first, *readings_while(build, lambda: take(build.pid))]
    finally:
        connection.close()
        execute(url, "DROP INDEX IF EXISTS ix_big_s")
    scanning = [r for r in taken if r.phase == "building index: scanning table"]
    assert len(scanning) >= 3, [(r.phase, r.percent) for r in taken]
    percents = [r.percent for r in scanning if r.percent is not None]
    assert rising(percents), percents
    reading = scanning[len(scanning) // 2]
    assert (reading.operation, reading.relation, reading.table) == (
        "CREATE INDEX CONCURRENTLY", "ix_big_s", "big")
    assert reading.unit == "blocks" and reading.total and reading.done is not None
    assert reading.percent == pytest.approx(100 * reading.done / reading.total)
    assert reading.text("3f2a1b9c", 130, 130) == (
        f"3f2a1b9c building ix_big_s: scanning table {int(reading.percent)}%"
        f" ({reading.done}/{reading.total} blocks), 2m10s")
    assert {"building index: loading tuples in tree"} <= {r.phase for r in taken}
    assert all(r.blockers == () for r in taken)


@pytest.mark.postgresql
def test_postgresql_vacuum_full_reports_its_progress(large_postgresql_table: str) -> None:
    url = large_postgresql_table
    connection, take = autocommit_reader(url)
    try:
        with running_pg(url, "VACUUM FULL big") as rewrite:
            first = until(lambda: take(rewrite.pid), lambda r: r.operation is not None)
            taken = [first, *readings_while(rewrite, lambda: take(rewrite.pid))]
    finally:
        connection.close()
    scanning = [r for r in taken if r.phase == "seq scanning heap"]
    assert len(scanning) >= 3, [(r.phase, r.percent) for r in taken]
    assert rising([r.percent for r in scanning if r.percent is not None])
    reading = scanning[-1]
    assert (reading.operation, reading.table, reading.unit) == ("VACUUM FULL", "big", "blocks")
    assert reading.text("3f2a1b9c", 3, 3).startswith(
        "3f2a1b9c rewriting big (VACUUM FULL): seq scanning heap ")


@pytest.mark.postgresql
def test_postgresql_any_query_inside_the_lock_transaction_can_hold_up_create_index_concurrently(
    postgresql_url: str,
) -> None:
    """Why the runner must not read inside a transaction it keeps open while a migration
    may run CREATE INDEX CONCURRENTLY.

    CIC ends by waiting for every transaction whose snapshot was older than its own at
    that moment, and then waits for that whole transaction, not just the query: a reading
    that happens to run at that moment ties the index build to the end of the lock's
    transaction, i.e. of the upgrade, which waits for the build. Here a query of the
    reader's that runs long (waiting for an advisory lock) stands for a reading caught at
    that moment.
    """
    execute(postgresql_url, "CREATE TABLE entry AS SELECT g AS id FROM generate_series(1, 1000) g")
    with pg_connect(postgresql_url) as gate, pg_reader(postgresql_url) as reader:
        gate.execute("SELECT pg_advisory_lock(42)")
        querying = threading.Thread(
            target=lambda: reader.cursor.execute("SELECT pg_advisory_xact_lock(42)"),
            daemon=True)
        querying.start()
        observer, take = autocommit_reader(postgresql_url)
        try:
            until(lambda: take(reader.pid), lambda r: r.waiting_for == "Lock:advisory")
            with running_pg(postgresql_url, "CREATE INDEX CONCURRENTLY ix ON entry (id)") as cic:
                until(lambda: take(cic.pid), lambda r: r.waiting_for == "Lock:virtualxid")
                gate.execute("SELECT pg_advisory_unlock(42)")
                querying.join(DEADLINE)
                assert not querying.is_alive()
                # The reader's query is over; the index build still waits for its transaction.
                reading = take(cic.pid)
                assert reading is not None and not cic.finished.is_set()
                assert reading.waiting_for == "Lock:virtualxid"
                assert [b.pid for b in reading.blockers] == [reader.pid]
                assert reading.blockers[0].state == "idle in transaction"
                assert reading.phase == "waiting for old snapshots"
                reader.connection.rollback()
                assert cic.finished.wait(DEADLINE) and cic.error is None
        finally:
            observer.close()


# --- MariaDB ---------------------------------------------------------------------------------


@pytest.mark.mysql
@INNODB_TRX
def test_mariadb_metadata_lock_wait_names_the_sessions_in_a_transaction(mysql_url: str) -> None:
    """A stock MariaDB (performance_schema off, no metadata_lock_info plugin): the sessions
    in a transaction older than the ALTER, as candidates."""
    execute(mysql_url, "CREATE TABLE entry (id INT PRIMARY KEY) ENGINE=InnoDB",
            "INSERT INTO entry VALUES (1)")
    reader = my_connect(mysql_url)
    cursor = reader.cursor()
    try:
        with hold_table(mysql_url, statement="SELECT * FROM entry") as holder:
            with running_my(mysql_url, "ALTER TABLE entry ADD COLUMN note INT") as alter:
                reading = until(lambda: read_mysql(cursor, [alter.pid]),
                                lambda r: r.waiting_for is not None, pause=INNODB_CACHE_IDLE)
            idle = read_mysql(cursor, [holder])
    finally:
        reader.close()
    assert (reading.server, reading.pid, reading.active) == ("mysql", alter.pid, True)
    assert reading.state == reading.waiting_for == "Waiting for table metadata lock"
    assert reading.statement == "ALTER TABLE entry ADD COLUMN note INT"
    assert reading.blocker_source == INNODB_TRX_SOURCE and reading.candidates
    by_id = {blocker.pid: blocker for blocker in reading.blockers}
    assert holder in by_id and alter.pid not in by_id
    blocker = by_id[holder]
    assert (blocker.user, blocker.state) == ("root", "Sleep")
    assert blocker.xact_age is not None and reading.statement_age is not None
    assert blocker.xact_age >= int(reading.statement_age) - 1
    assert reading.phase is None and reading.percent is None
    assert (f"3f2a1b9c waiting for a lock (Waiting for table metadata lock) perhaps held by"
            f" connection {holder} (root, Sleep, in a transaction for 0m0"
            in reading.text("3f2a1b9c", 2, 2))
    assert reading.text("3f2a1b9c", 2, 2).endswith(
        ": ALTER TABLE entry ADD COLUMN note INT, 0m02s")
    assert idle is not None
    assert (idle.pid, idle.active, idle.state, idle.statement) == (holder, False, None, None)


@pytest.mark.mysql
@INNODB_TRX
def test_mariadb_row_lock_wait_names_the_blocking_transaction(mysql_url: str) -> None:
    execute(mysql_url, "CREATE TABLE entry (id INT PRIMARY KEY, v INT) ENGINE=InnoDB",
            "INSERT INTO entry VALUES (1, 1), (2, 2)")
    reader = my_connect(mysql_url)
    cursor = reader.cursor()
    try:
        with (
            hold_table(mysql_url, statement="UPDATE entry SET v = 10 WHERE id = 1") as holder,
            running_my(mysql_url, "UPDATE entry SET v = 20 WHERE id = 1") as update,
        ):
            # INNODB_TRX and INNODB_LOCK_WAITS come from a cache that InnoDB refreshes
            # only once nobody has read it for 0.1 s: read less often than that.
            reading = until(lambda: read_mysql(cursor, [update.pid]),
                            lambda r: bool(r.blockers), pause=INNODB_CACHE_IDLE)
    finally:
        reader.close()
    assert reading.waiting_for == "InnoDB row lock"
    assert reading.blocker_source == "information_schema.INNODB_LOCK_WAITS"
    assert not reading.candidates
    assert [blocker.pid for blocker in reading.blockers] == [holder]
    assert reading.blockers[0].xact_age is not None
    assert reading.text("3f2a1b9c", 1, 1).startswith(
        f"3f2a1b9c waiting for a lock (InnoDB row lock) held by connection {holder} (root,"
        " Sleep, in a transaction for ")


class MariadbWithLockData(PrivateMariadb):
    """A private MariaDB with what a stock one lacks: performance_schema and its metadata
    lock instrument on, and the metadata_lock_info plugin loaded."""

    def start(self) -> None:
        self._process = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={self.data}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.directory / 'socket'}",
             "--user=mysql", f"--log-error={self.directory / 'error.log'}",
             "--performance-schema=ON",
             "--performance-schema-instrument=wait/lock/metadata/sql/mdl=ON",
             "--plugin-load-add=metadata_lock_info"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                my_connect(self.url).close()
                return
            except pymysql.err.OperationalError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def blocked_alter(url: str, column: str) -> tuple[Reading, int, int]:
    """An ALTER waiting for the metadata lock of a session that read its table, beside
    another session in a transaction on another table: the reading, the holder's id and
    the other's."""
    reader = my_connect(url)
    cursor = reader.cursor()
    try:
        with (
            hold_table(url, statement="SELECT * FROM other") as other,
            hold_table(url, statement="SELECT * FROM entry") as holder,
            running_my(url, f"ALTER TABLE entry ADD COLUMN {column} INT") as alter,
        ):
            reading = until(lambda: read_mysql(cursor, [alter.pid]),
                            lambda r: r.waiting_for is not None)
    finally:
        reader.close()
    return reading, holder, other


@pytest.mark.mysql
def test_mariadb_exact_metadata_lock_holders_where_the_server_has_them() -> None:
    """performance_schema.metadata_locks (MySQL 8's default), and with its instrument off,
    the metadata_lock_info plugin: the holder alone, not the other session in a
    transaction that the stock fallback would also name."""
    if not (shutil.which("mariadbd") or Path("/usr/sbin/mariadbd").exists()):
        unavailable("mariadbd not installed", REQUIRE_DATABASES)
    with _private_server(MariadbWithLockData, "runner-progress-mariadb-") as server:
        server.start()
        url = server.url + "progress"
        execute(server.url, "CREATE DATABASE progress")
        execute(url, "CREATE TABLE entry (id INT PRIMARY KEY) ENGINE=InnoDB",
                "CREATE TABLE other (id INT PRIMARY KEY) ENGINE=InnoDB")
        sources = []
        for enabled in ("YES", "NO"):
            execute(url, f"UPDATE performance_schema.setup_instruments SET ENABLED = '{enabled}'"
                    " WHERE NAME = 'wait/lock/metadata/sql/mdl'")
            reading, holder, other = blocked_alter(url, f"c_{enabled.lower()}")
            assert other != holder
            assert [blocker.pid for blocker in reading.blockers] == [holder]
            assert not reading.candidates
            assert reading.blockers[0].xact_age is not None
            assert reading.text("r", 1, 1).startswith(
                f"r waiting for a lock (Waiting for table metadata lock) held by connection"
                f" {holder} (root, Sleep, in a transaction for ")
            sources.append(reading.blocker_source)
    assert sources == ["performance_schema.metadata_locks",
                       "information_schema.METADATA_LOCK_INFO"]


@pytest.mark.mysql
@INNODB_TRX
def test_mariadb_copying_alter_reports_its_stage_progress(mysql_url: str) -> None:
    execute(mysql_url, "CREATE TABLE big (id INT PRIMARY KEY, v INT, s VARCHAR(40))"
            " ENGINE=InnoDB",
            "INSERT INTO big SELECT seq, seq, REPEAT('x', 30) FROM seq_1_to_1500000")
    reader = my_connect(mysql_url)
    cursor = reader.cursor()
    try:
        statement = "ALTER TABLE big MODIFY v BIGINT, ALGORITHM=COPY"
        with running_my(mysql_url, statement) as alter:
            first = until(lambda: read_mysql(cursor, [alter.pid]),
                          lambda r: r.phase is not None)
            taken = [first, *readings_while(alter, lambda: read_mysql(cursor, [alter.pid]))]
    finally:
        reader.close()
    copying = [r for r in taken if r.phase == "stage 1 of 2"]
    assert len(copying) >= 3, [(r.state, r.phase, r.percent) for r in taken]
    assert {r.state for r in copying} == {"copy to tmp table"}
    assert rising([r.percent for r in copying if r.percent is not None])
    reading = copying[len(copying) // 2]
    assert reading.percent is not None and 0 <= reading.percent <= 100
    assert reading.statement == statement
    assert reading.text("3f2a1b9c", 4, 4) == (
        f"3f2a1b9c copy to tmp table: stage 1 of 2, {int(reading.percent)}%: {statement},"
        " 0m04s")

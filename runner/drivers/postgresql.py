"""PostgreSQL: a transaction-level advisory lock, in a transaction held open for the upgrade.

The lock (`pg_try_advisory_xact_lock`) lives exactly as long as the transaction that took
it: on one server session, whatever sits between (a transaction-pooling proxy included),
and gone the moment the transaction ends or the client goes. A waiter polls in short
transactions. The holder's transaction takes no lock on any table: it reads inside
savepoints it rolls back, which releases what they took, and in READ COMMITTED, by the
simple query protocol, it holds no snapshot between statements, so a `CREATE INDEX
CONCURRENTLY` in the upgrade does not wait for it (tests/integration/test_signals.py and
test_lock_transaction.py). A statement of ours running at the moment such a build looks
for old snapshots would make it wait for the whole transaction: runner.progress never
reads on this connection while one runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from runner import database
from runner.drivers import (
    APPLICATION_NAME_PREFIX,
    Driver,
    Holder,
    Poll,
    Rows,
    VersionTable,
    hashed,
    quote_identifier,
    this_holder,
    utc_timestamp,
)
from runner.errors import ConfigError
from runner.urls import DatabaseUrl

_TRY_LOCK = ("SELECT pg_try_advisory_xact_lock(%s),"
             " set_config('idle_in_transaction_session_timeout', '0', true)")
"""Try the lock in this transaction; if taken, no server setting may end the transaction
while it idles (SET LOCAL). It reads no relation: the holder's transaction keeps no lock
but the advisory one."""

_ROOM = (
    "SELECT current_setting('max_connections')::int"
    " - current_setting('superuser_reserved_connections')::int"
    " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),"
    " current_setting('max_connections')::int"
)
"""The connections left for other clients, of how many (a waiter's reading)."""

_UNDEFINED_TABLE, _UNDEFINED_SCHEMA = "42P01", "3F000"

HOLDER = """
    SELECT a.application_name, a.xact_start, host(a.client_addr)
    FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
    AND l.classid::bigint = %s AND l.objid::bigint = %s
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    LIMIT 1
"""
"""The session that holds the advisory lock whose key has the halves (high, low): its
application_name, when its transaction (the lock's) started, its client's address."""

# PostgreSQL keeps the first NAMEDATALEN - 1 bytes of an application_name.
_APPLICATION_NAME_BYTES = 63


def advisory_key(name: str) -> int:
    """PostgreSQL's advisory lock key for the lock `name`: one signed 64-bit integer."""
    return int.from_bytes(bytes.fromhex(hashed(name, 16)), "big", signed=True)


def advisory_key_halves(key: int) -> tuple[int, int]:
    """An advisory key as pg_locks shows it: classid (high half), objid (low half)."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return unsigned >> 32, unsigned & 0xFFFFFFFF


def application_name(holder: Holder) -> str:
    """`migrate-runner <host> <pid>`, the host cut so that the pid survives PostgreSQL's limit."""
    tail = f" {holder.pid}"
    room = _APPLICATION_NAME_BYTES - len(APPLICATION_NAME_PREFIX) - 1 - len(tail)
    host = (holder.host or "").encode()[:room].decode(errors="ignore")
    return f"{APPLICATION_NAME_PREFIX} {host}{tail}"


def parse_application_name(name: str | None) -> tuple[str | None, int | None]:
    """The host and pid in a runner's application_name; (None, None) for any other name."""
    words = (name or "").split(" ")
    if len(words) == 3 and words[0] == APPLICATION_NAME_PREFIX and words[2].isdigit():
        return words[1] or None, int(words[2])
    return None, None


def holder_from_row(row: tuple[Any, ...] | None) -> Holder | None:
    """The holder in HOLDER's row; None when there is none (the lock is free)."""
    if row is None:
        return None
    name, xact_start, client = row
    host, pid = parse_application_name(name)
    since = utc_timestamp(xact_start) if xact_start is not None else None
    why = None
    if pid is None:
        why = ("its session is not named by a runner" if name is not None else
               "its session is hidden from this role (grant pg_read_all_stats)")
    return Holder(host=host or client, pid=pid, since=since, why_unknown=why)


class PostgresqlDriver(Driver):
    """`pg_try_advisory_xact_lock(key)` in a transaction kept open while the lock is held."""

    backend = "postgresql"

    def __init__(self, url: DatabaseUrl, name: str, connect_timeout: float) -> None:
        super().__init__(url, name, connect_timeout)
        self.key = advisory_key(name)
        self._side: Any = None

    def _open(self) -> Any:
        """psycopg 3, whatever driver the URL names (the query parameters are libpq's, as
        for psycopg2): only it binds parameters in the client (see below)."""
        import psycopg

        # Parameters bound in the client, so every statement goes by the simple query
        # protocol: a portal of the extended protocol would keep its snapshot (and so an
        # xmin) in the lock's transaction until the next statement, and a CREATE INDEX
        # CONCURRENTLY in the upgrade would wait for that transaction, i.e. forever. And no
        # server-side prepared statements, which a pooler would hand to other sessions.
        return psycopg.connect(**self._libpq_arguments(), cursor_factory=psycopg.ClientCursor,
                               prepare_threshold=None)

    def _libpq_arguments(self) -> dict[str, Any]:
        """The URL's connection parameters, the runner's application_name, the timeout."""
        return {**self.connect_arguments("dbname"),
                "application_name": application_name(this_holder()),
                "connect_timeout": max(2, int(self.connect_timeout))}

    def fetch(self, query: str, params: Sequence[Any] = ()) -> Rows:
        try:
            return super().fetch(query, params)
        except Exception as error:  # the driver's
            if "statement pooling mode" not in str(error):
                raise
            # PgBouncer's pool_mode = statement refuses transactions: the lock lives in one.
            raise ConfigError(
                "the database URL goes through a pooler in statement mode, which refuses"
                " transactions (the migration lock lives in one): use transaction or session"
                " pooling, or point MIGRATION_DATABASE_URL at the database directly"
            ) from None

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        if not self.held:
            with super().scope():
                yield
            return
        # Inside the lock's transaction: rolling back to a savepoint releases what the
        # readings took (an upgrade that alters the version table must not wait for us).
        with self.guard:
            self.fetch("SAVEPOINT runner_reading")
            try:
                yield
            finally:
                self.fetch("ROLLBACK TO SAVEPOINT runner_reading")
                self.fetch("RELEASE SAVEPOINT runner_reading")

    def poll(self, table: VersionTable | None) -> Poll:
        if self.held:
            return Poll(taken=True)
        with self.guard:
            ((taken, _),) = self.fetch(_TRY_LOCK, (self.key,))
            if taken:
                self.held = True
                return Poll(taken=True)
            with self.scope():
                ((free, total),) = self.fetch(_ROOM)
                self.room = (int(free), int(total))
                return Poll(taken=False,
                            versions=None if table is None else self._versions(table))

    def read_versions(self, table: VersionTable) -> tuple[str, ...]:
        with self.scope():
            return self._versions(table)

    def _versions(self, table: VersionTable) -> tuple[str, ...]:
        """The version table's rows, in the reading's scope (it ends the transaction, or
        rolls back to its savepoint, so a missing table's error is left behind). A SELECT,
        not a look in the catalog: in the lock's long transaction the catalog cache is
        refreshed only by taking a lock, which the SELECT does."""
        name = quote_identifier(table.name, '"')
        if table.schema:
            name = f"{quote_identifier(table.schema, chr(34))}.{name}"
        try:
            return tuple(str(row[0]) for row in self.fetch(f"SELECT version_num FROM {name}"))
        except Exception as error:  # the driver's UndefinedTable
            if database.sqlstate(error) in (_UNDEFINED_TABLE, _UNDEFINED_SCHEMA):
                return ()
            raise

    def release(self) -> None:
        if self.held:
            self.held = False
            self.end_transaction()  # the lock ends with its transaction

    def holder(self) -> Holder | None:
        with self.scope():
            rows = self.fetch(HOLDER, advisory_key_halves(self.key))
        return holder_from_row(rows[0] if rows else None)

    @contextlib.contextmanager
    def reading_outside(self) -> Iterator[Any]:
        """A cursor on a second, autocommit connection, opened for the first such reading
        and kept until `close`: a query in the lock's transaction at the moment a CREATE
        INDEX CONCURRENTLY looks for older snapshots would make the build wait for that
        whole transaction (the upgrade, i.e. forever), while an autocommit reading's
        transaction ends with it."""
        if self._side is None:
            import psycopg

            self._side = psycopg.connect(**self._libpq_arguments(), autocommit=True,
                                         prepare_threshold=None)
        cursor = self._side.cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    def close(self) -> None:
        super().close()
        side, self._side = self._side, None
        if side is not None:
            with contextlib.suppress(Exception):
                side.close()

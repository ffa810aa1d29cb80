"""One driver per database: the runner's own connection, which takes the migration lock and
reads the version table (as golang-migrate's `Driver` locks and reads the version).

A driver holds one DB-API connection of a bundled driver (psycopg 3, PyMySQL, sqlite3),
opened before the app is loaded; where the URL needs another driver's connect arguments,
that driver's connection through SQLAlchemy. Nothing here imports SQLAlchemy otherwise.
"""

from __future__ import annotations

import abc
import contextlib
import datetime
import hashlib
import math
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from runner import database
from runner.errors import ConfigError
from runner.urls import DatabaseUrl

APPLICATION_NAME_PREFIX = "migrate-runner"
"""The first word of the PostgreSQL application_name, and of the MySQL holder's beacon."""

Rows = list[tuple[Any, ...]]

ROOM_FRACTION = 0.1
ROOM_MINIMUM = 5
"""A waiter keeps its connection between polls while more than this share of the server's
connections (and more than ROOM_MINIMUM) is free for other clients."""


@dataclass(frozen=True)
class VersionTable:
    """Where Alembic records a database's revisions: `alembic_version`, or the app's own."""

    name: str = "alembic_version"
    schema: str | None = None

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name

    @classmethod
    def configured(cls, arguments: dict[str, Any]) -> VersionTable:
        """The version table in Migrate's `configure_args` (env.py passes them to Alembic)."""
        return cls(arguments.get("version_table") or "alembic_version",
                   arguments.get("version_table_schema"))


@dataclass(frozen=True)
class Holder:
    """Who holds the migration lock: host name, OS process id, since when (ISO 8601, UTC)."""

    host: str | None
    pid: int | None
    since: str | None = None
    why_unknown: str | None = None
    """Why the pid is not known, when it is not."""

    def as_dict(self) -> dict[str, Any]:
        """The `holder` field of `lock.waiting` and `lock.timeout`."""
        return {key: value for key, value in asdict(self).items()
                if key != "why_unknown" or value is not None}

    @classmethod
    def from_dict(cls, recorded: dict[str, Any]) -> Holder:
        """The holder a runner recorded with `as_dict`; missing keys are unknown."""
        return cls(host=recorded.get("host"), pid=recorded.get("pid"), since=recorded.get("since"))

    def describe(self) -> str:
        """'pid 42 on host web-1 since 2026-01-01T00:00:00Z', as far as it is known."""
        if self.pid is not None:
            parts = [f"pid {self.pid}"]
        else:
            parts = [f"a process whose pid is unknown ({self.why_unknown or 'not a runner'})"]
        if self.host:
            parts.append(f"on host {self.host}")
        if self.since:
            parts.append(f"since {self.since}")
        return " ".join(parts)


def this_holder() -> Holder:
    """This process as a lock holder: its host name, its OS pid, now."""
    return Holder(host=socket.gethostname(), pid=os.getpid(), since=utc_timestamp())


def utc_timestamp(moment: datetime.datetime | None = None) -> str:
    """`moment` (default: now) as ISO 8601 in UTC to the second, e.g. 2026-01-01T00:00:00Z."""
    moment = moment or datetime.datetime.now(datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def lock_name(database: str | None, table: VersionTable) -> str:
    """The lock's name: every replica of one app agrees on it, two apps on one server differ."""
    return f"{database or ''}/{table}"


def hashed(name: str, length: int) -> str:
    """A stable hex digest of `name`, `length` characters long."""
    return hashlib.sha256(name.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class Poll:
    """One try of the migration lock: taken, or not and the version table as it was then."""

    taken: bool
    versions: tuple[str, ...] | None = None
    """Read only when the lock was not taken (a waiter stops once the head arrives)."""


class Driver(abc.ABC):
    """The runner's connection to one database: the migration lock and the version table.

    The connection is opened by `connect` (which the wait retries) and, after `idle` let go
    of it, again by the next call that needs it. Every method may be called from one
    thread at a time; `reading` serves a second thread (progress) between them.
    """

    backend: str

    def __init__(self, url: DatabaseUrl, name: str, connect_timeout: float) -> None:
        self.url = url
        self.lock_name = name
        self.connect_timeout = connect_timeout
        self.held = False
        """Whether this process holds the migration lock."""
        self._connection: Any = None
        self._engine: Any = None  # the SQLAlchemy engine behind a foreign driver's connection
        self.guard = threading.RLock()
        """Held by every use of the connection: one thread at a time (the progress thread
        and the upgrade's statement hook take it too)."""
        self.room: tuple[int, int] | None = None
        """At the last poll: the connections the server had left for other clients, of how
        many (set by a waiter's poll)."""

    # The connection ---------------------------------------------------------------------

    def connect(self) -> None:
        """Open the connection if it is not open; the driver's error if the server refuses."""
        with self.guard:
            if self._connection is None:
                self._connection = self._open()

    @abc.abstractmethod
    def _open(self) -> Any:
        """A new DB-API connection, not in autocommit: every reading ends its transaction."""

    def _open_through_sqlalchemy(self, connect_args: dict[str, Any]) -> Any:
        """A DB-API connection of the URL's own driver, with its own connect arguments
        (SQLAlchemy's dialect translates the URL): for a driver the runner does not bundle."""
        import sqlalchemy as sa

        if self._engine is None:
            try:
                self._engine = sa.create_engine(self.url.render(), poolclass=sa.pool.NullPool,
                                                connect_args=connect_args)
            except ModuleNotFoundError as missing:
                from runner.urls import DRIVER_PACKAGES

                package = DRIVER_PACKAGES.get(missing.name or "", missing.name)
                raise ConfigError(
                    f"the database URL names the driver {self.url.driver!r}, which is not"
                    f" installed: pip install {package}, or name an installed driver in the"
                    f" URL (e.g. {self.url.backend}+pymysql://)") from None
        return self._engine.raw_connection()

    @property
    def connection(self) -> Any:
        """The open connection (opened again after `idle`)."""
        self.connect()
        return self._connection

    def fetch(self, query: str, params: Sequence[Any] = ()) -> Rows:
        """The rows of `query` (with %s placeholders) on the connection. A connection error
        closes a connection that holds no lock, so the next call opens a new one."""
        with self.guard:
            try:
                with contextlib.closing(self.connection.cursor()) as cursor:
                    cursor.execute(query, *([tuple(params)] if params else []))
                    return list(cursor.fetchall()) if cursor.description else []
            except Exception as error:  # the driver's
                if not self.held and database.is_connection_error(error):
                    self.close()
                raise

    def end_transaction(self) -> None:
        """Roll back the connection's transaction (a reading's: it changed nothing)."""
        with self.guard:
            if self._connection is not None:
                self._connection.rollback()

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Run readings that leave nothing behind: no transaction stays open after them
        (or, where the lock lives in one, nothing they took stays in it)."""
        with self.guard:
            try:
                yield
            finally:
                self.end_transaction()

    @contextlib.contextmanager
    def reading(self) -> Iterator[Any]:
        """A cursor for a reading of another thread (progress, table sizes), in `scope`."""
        with self.guard, self.scope():
            cursor = self.connection.cursor()
            try:
                yield cursor
            finally:
                cursor.close()

    @contextlib.contextmanager
    def reading_outside(self) -> Iterator[Any]:
        """A cursor for a reading that must not run in the lock's transaction (PostgreSQL,
        while a CONCURRENTLY statement runs: runner.drivers.postgresql); the lock's own
        connection where the lock lives in no transaction."""
        with self.reading() as cursor:
            yield cursor

    def close(self) -> None:
        """Close the connection, which frees the lock if it is still held."""
        with self.guard:
            connection, self._connection, self.held = self._connection, None, False
            if connection is not None:
                with contextlib.suppress(Exception):  # closing frees what it held anyway
                    connection.close()
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def idle(self) -> None:
        """Between two polls, the lock not held: let go of the connection when the server has
        little room left, so that a herd of waiters cannot starve the holder (the next poll
        connects again); keep it otherwise, sparing the server a session per poll."""
        if not self.held and self.short_of_room():
            self.close()

    def short_of_room(self) -> bool:
        """Whether the server had few connections left at the last poll: at most a tenth of
        them, or ROOM_MINIMUM."""
        if self.room is None:
            return False
        free, total = self.room
        return free <= max(ROOM_MINIMUM, math.ceil(total * ROOM_FRACTION))

    def connect_arguments(self, database_key: str) -> dict[str, Any]:
        """The bundled driver's connect() arguments for the URL (the database under
        `database_key`), its query parameters passed on as SQLAlchemy's dialects pass them."""
        url = self.url
        arguments: dict[str, Any] = {"host": url.host, "port": url.port, "user": url.username,
                                     "password": url.password, database_key: url.database}
        arguments.update(url.query)
        return {key: value for key, value in arguments.items() if value is not None}

    # The version table and the lock ----------------------------------------------------

    @abc.abstractmethod
    def read_versions(self, table: VersionTable) -> tuple[str, ...]:
        """The revisions in the version table; () when it does not exist yet. Leaves no
        lock on the table behind (the holder's upgrade will change it)."""

    @abc.abstractmethod
    def poll(self, table: VersionTable | None) -> Poll:
        """Try the migration lock without waiting; when it is not free, read `table`."""

    @abc.abstractmethod
    def release(self) -> None:
        """Give the lock back; the connection stays open."""

    @abc.abstractmethod
    def holder(self) -> Holder | None:
        """Who holds the lock now (this process included), or None when it is free."""

    def __enter__(self) -> Driver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_driver(url: DatabaseUrl, table: VersionTable, connect_timeout: float) -> Driver:
    """The driver for `url`'s database and the lock of its version table; not connected."""
    name = lock_name(url.database, table)
    timeout = database.attempt_timeout(connect_timeout)
    if url.backend == "postgresql":
        from runner.drivers.postgresql import PostgresqlDriver

        return PostgresqlDriver(url, name, timeout)
    if url.backend in ("mysql", "mariadb"):
        from runner.drivers.mysql import MysqlDriver

        return MysqlDriver(url, name, timeout)
    if url.backend == "sqlite":
        from runner.drivers.sqlite import SqliteDriver

        return SqliteDriver(url, name, timeout)
    raise ConfigError(f"no migration lock for the {url.backend!r} dialect: use PostgreSQL,"
                      " MySQL/MariaDB or SQLite")


def quote_identifier(name: str, quote: str) -> str:
    """`name` quoted with `quote` (" or `), its own quotes doubled."""
    return quote + name.replace(quote, quote * 2) + quote

"""The migration lock: one backend per dialect, polled with a try-lock under a deadline.

This module imports no SQLAlchemy: the fast path (runner.fastlock) names, takes and polls
the same lock with the bare driver before the app, and SQLAlchemy, are loaded.
"""

from __future__ import annotations

import abc
import contextlib
import datetime
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import tenacity

from runner import database, signals
from runner.errors import ConfigError, LockTimeout
from runner.log import emit

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import URL

MAX_POLL_INTERVAL = 1.0
"""The cap on the pause between two tries of the lock, in seconds (plus jitter)."""

POLL_GROWTH = 1.3
"""Each pause between two tries is this much longer than the last (from 50 ms, up to
MAX_POLL_INTERVAL): a waiter sees the lock free or the head arrive within about a third of
the time it has waited so far, so the replicas of a short migration exit soon after it."""

WAITING_LOG_INTERVAL = 15.0
"""How often, in seconds, a waiter repeats `lock.waiting`."""


APPLICATION_NAME_PREFIX = "migrate-runner"
"""The first word of the PostgreSQL application_name, and of the MySQL holder's beacon."""


@dataclass(frozen=True)
class Holder:
    """Who holds the migration lock: host name, OS process id, since when (ISO 8601, UTC)."""

    host: str | None
    pid: int | None
    since: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The `holder` field of `lock.waiting` and `lock.timeout`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, recorded: dict[str, Any]) -> Holder:
        """The holder a runner recorded with `as_dict`; missing keys are unknown."""
        return cls(host=recorded.get("host"), pid=recorded.get("pid"), since=recorded.get("since"))

    def describe(self) -> str:
        """'pid 42 on host web-1 since 2026-01-01T00:00:00Z', as far as it is known."""
        parts = [f"pid {self.pid}" if self.pid is not None else "a process of unknown pid"]
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


class MigrationLock(abc.ABC):
    """A lock that dies with its holder; try_acquire never blocks."""

    def __init__(self, url: URL | None, name: str) -> None:
        self.url = url
        """Where the lock lives; None for the fast path's bare-driver lock."""
        self.name = name

    @abc.abstractmethod
    def try_acquire(self) -> bool:
        """Take the lock if it is free; return whether this holder has it now."""

    @abc.abstractmethod
    def release(self) -> None:
        """Give the lock back; the holder stays open for another try."""

    @abc.abstractmethod
    def holder(self) -> Holder | None:
        """Who holds the lock now (this process included), or None when it is free."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the holder's connection or file, which frees the lock if still held."""

    def idle(self) -> None:
        """Let go of the connection between two tries, the lock not held: a waiter holds
        none while it sleeps, so that a herd cannot fill the server and starve the holder
        of the connection it migrates on. The next try connects again."""
        return None  # a file lock (SQLite) uses no connection

    def current_revisions(
        self, version_table: str, schema: str | None
    ) -> tuple[str, ...] | None:
        """The revisions in the version table, read on the lock's own connection, so that a
        waiter needs no second one; () before the table exists, None where it cannot tell."""
        return None

    def __enter__(self) -> MigrationLock:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class TakenConnection:
    """A DB-API connection that holds the migration lock already (the fast path took it,
    runner.fastlock), and the server session it took it on (PostgreSQL's backend pid)."""

    connection: Any
    backend: int | None = None


class ConnectionLock(MigrationLock):
    """A lock held by a database session of its own (`_connection`, in AUTOCOMMIT)."""

    _engine: sa.Engine
    _open: sa.Connection | None = None
    _adopting: sa.Engine | None = None

    def _open_connection(self, adopted: TakenConnection | None = None) -> sa.Connection:
        """The lock's connection: a new one of `_engine`, or `adopted`, the fast path's DB-API
        connection (runner.fastlock), which holds the lock already: taken over, so that no
        other replica can take the lock in between. (It then holds the lock once more than
        `release` gives back: closing it frees the lock.)"""
        engine = self._engine
        if adopted is not None:
            import sqlalchemy as sa

            self._adopting = engine = sa.create_engine(
                engine.url, creator=lambda: adopted.connection, poolclass=sa.pool.StaticPool)
        return engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    @property
    def _connection(self) -> sa.Connection:
        """The lock's connection; opened again after `idle`."""
        if self._open is None:
            self._open = self._open_connection()
        return self._open

    def idle(self) -> None:
        # Nothing to give back: closing the session frees anything it held.
        with contextlib.suppress(Exception):
            self._close_connection()

    def _close_connection(self) -> None:
        opened, adopting, self._open, self._adopting = self._open, self._adopting, None, None
        if opened is not None:
            opened.close()
        if adopting is not None:
            adopting.dispose()

    def current_revisions(
        self, version_table: str, schema: str | None
    ) -> tuple[str, ...] | None:
        import sqlalchemy as sa

        table = sa.table(version_table, sa.column("version_num"), schema=schema)
        try:
            return tuple(self._connection.scalars(sa.select(table.c.version_num)))
        except sa.exc.ProgrammingError:
            # No version table yet: nothing applied (PostgreSQL 42P01, MySQL 1146).
            return ()


POSTGRESQL_HOLDER = """
    SELECT a.application_name, a.state_change, host(a.client_addr)
    FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
    AND l.classid::bigint = %(high)s AND l.objid::bigint = %(low)s
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    LIMIT 1
"""
"""The session that holds the advisory lock whose key has the halves `high` and `low`
(advisory_key_halves; pg_locks splits a bigint key into classid and objid, objsubid 1):
its application_name, when it last changed state, and its client's address."""


def postgresql_holder(row: tuple[Any, ...] | None) -> Holder | None:
    """The holder in POSTGRESQL_HOLDER's row; None when there is none (the lock is free)."""
    if row is None:
        return None
    name, state_change, client = row
    host, pid = parse_application_name(name)
    # The lock connection runs nothing after taking the lock: its last state change is
    # when it took it. (Null when the holder is another role: no pg_read_all_stats.)
    since = utc_timestamp(state_change) if state_change is not None else None
    return Holder(host=host or client, pid=pid, since=since)


_MYSQL_LOCK_OWNER = "SELECT IS_USED_LOCK(%(name)s)"
"""The id of the MySQL connection that holds the user lock `name`, or NULL."""

_MYSQL_HOLDER_ROWS = (
    "SELECT ID, HOST, INFO FROM information_schema.PROCESSLIST"
    " WHERE ID = %(id)s OR INFO LIKE %(beacon)s"
)
"""The process list rows (ID, HOST, INFO) of the lock's connection, `id`, and of the
statement its holder shows itself by, `beacon` (runner.locks.mysql)."""

Rows = list[tuple[Any, ...]]


def mysql_beacon_prefix(lock_name: str, connection_id: int) -> str:
    """How the statement that names the holder of MySQL lock `lock_name`, held by connection
    `connection_id`, starts; the holder's JSON record follows, then ` */`."""
    return f"SELECT /* {APPLICATION_NAME_PREFIX} holder {lock_name} {connection_id} "


def mysql_lock_holder(
    fetch: Callable[[str, dict[str, Any]], Rows], lock_name: str
) -> Holder | None:
    """Who holds MySQL lock `lock_name`, read with `fetch(query, params)` on any connection
    (SQLAlchemy's or the bare driver's): None when it is free."""
    ((connection_id,),) = fetch(_MYSQL_LOCK_OWNER, {"name": lock_name})
    if connection_id is None:
        return None
    beacon = mysql_beacon_prefix(lock_name, connection_id) + "%"
    rows = fetch(_MYSQL_HOLDER_ROWS, {"id": connection_id, "beacon": beacon})
    return mysql_holder(lock_name, connection_id, rows)


def mysql_holder(lock_name: str, connection_id: int, rows: Rows) -> Holder:
    """The holder of MySQL lock `lock_name`, held by `connection_id`, from its process list
    rows (_MYSQL_HOLDER_ROWS)."""
    prefix = mysql_beacon_prefix(lock_name, connection_id)
    for _, _, info in rows:
        if info and info.startswith(prefix):
            return Holder.from_dict(json.loads(info[len(prefix):].split(" */", 1)[0]))
    # Not a runner, or it has not shown itself yet: the client's address is all there is.
    client = next((host for id_, host, _ in rows if id_ == connection_id), None)
    return Holder(host=client.rsplit(":", 1)[0] if client else None, pid=None)


def lock_name(database: str | None, version_table: str, schema: str | None) -> str:
    """The lock's name: every replica of one app agrees on it, two apps on one server differ."""
    qualified = f"{schema}.{version_table}" if schema else version_table
    return f"{database or ''}/{qualified}"


def hashed(name: str, length: int) -> str:
    """A stable hex digest of `name`, `length` characters long."""
    return hashlib.sha256(name.encode()).hexdigest()[:length]


def advisory_key(name: str) -> int:
    """PostgreSQL's advisory lock key for the lock `name`: one signed 64-bit integer."""
    return int.from_bytes(bytes.fromhex(hashed(name, 16)), "big", signed=True)


def advisory_key_halves(key: int) -> dict[str, int]:
    """An advisory key as pg_locks shows it: classid (`high` half) and objid (`low` half)."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return {"high": unsigned >> 32, "low": unsigned & 0xFFFFFFFF}


def user_lock_name(name: str) -> str:
    """MySQL's GET_LOCK name for the lock `name` (lock names are server-wide, <= 64 chars)."""
    return f"{APPLICATION_NAME_PREFIX}/{hashed(name, 40)}"


# PostgreSQL keeps the first NAMEDATALEN - 1 bytes of an application_name.
_APPLICATION_NAME_BYTES = 63


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


def open_lock(url: URL, name: str, adopted: TakenConnection | None = None) -> MigrationLock:
    """Open the dialect's lock for `name` on a dedicated connection to `url`, or on
    `adopted`: a DB-API connection of the URL's driver that holds the lock already."""
    backend = url.get_backend_name()
    if backend == "postgresql":
        from runner.locks.postgresql import PostgresqlLock

        return PostgresqlLock(url, name, adopted)
    if backend in ("mysql", "mariadb"):
        from runner.locks.mysql import MysqlLock

        return MysqlLock(url, name, adopted)
    if backend == "sqlite":
        from runner.locks.sqlite import SqliteLock

        return SqliteLock(url, name)
    raise ConfigError(
        f"no migration lock for the {backend!r} dialect: use PostgreSQL, MySQL/MariaDB"
        " or SQLite in --database-url/DATABASE_URL"
    )


def acquire(
    lock: MigrationLock,
    timeout: float,
    stop_waiting: Callable[[], bool],
    sleep: Callable[[float], None] = signals.sleep,
    announce: bool = True,
) -> bool:
    """Poll until the lock is ours (True) or `stop_waiting()` is true (False); else LockTimeout,
    or the connection's error when the last try could not reach the server.

    Between two tries the waiter holds no connection (`idle`: a reconnect per poll measured
    no slower in an 8-replica herd), and a try that finds the server full or gone is tried
    again after the pause. `announce`: log `lock.acquired`
    (the fast path hands the lock on to the full path, which logs it when it takes it again).
    """
    started = time.monotonic()
    last_logged = float("-inf")
    unreachable: list[Exception] = []  # the last try's connection error, if it had one

    def attempt() -> bool | None:
        unreachable.clear()
        try:
            if lock.try_acquire():
                return True
            if stop_waiting():
                return False
        except Exception as exc:  # any driver's error (SQLAlchemy's or a bare driver's)
            if not database.is_transient(exc):
                raise
            # A full server ("too many connections") or a restart: try again after the
            # pause, on a new connection (closing this one frees the lock if it was taken).
            unreachable.append(exc)
            lock.idle()
        return None

    def before_sleep(state: tenacity.RetryCallState) -> None:
        nonlocal last_logged
        waited = time.monotonic() - started
        if waited - last_logged >= WAITING_LOG_INTERVAL:
            last_logged = waited
            holder = _holder_or_none(lock)
            emit("lock.waiting", f"{_held_by(holder)} holds the migration lock; waiting",
                 lock=lock.name, waited=round(waited, 3),
                 holder=holder.as_dict() if holder else None)
        lock.idle()

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(timeout),
        wait=tenacity.wait_exponential(multiplier=0.05, max=MAX_POLL_INTERVAL,
                                       exp_base=POLL_GROWTH)
        + tenacity.wait_random(0, 0.1),
        retry=tenacity.retry_if_result(lambda outcome: outcome is None),
        before_sleep=before_sleep,
        sleep=sleep,
    )
    try:
        acquired = bool(retrying(attempt))
    except tenacity.RetryError:
        if unreachable:
            raise unreachable[0] from None
        waited = time.monotonic() - started
        holder = _holder_or_none(lock)
        raise LockTimeout(
            f"the migration lock {lock.name!r} was still held by {_held_by(holder)} after"
            f" {waited:.1f}s: raise --lock-timeout/RUNNER_LOCK_TIMEOUT, or find the"
            " migration that holds it",
            waited=round(waited, 3),
            holder=holder.as_dict() if holder else None,
        ) from None
    if acquired and announce:
        emit("lock.acquired", "took the migration lock", lock=lock.name,
             waited=round(time.monotonic() - started, 3))
    return acquired


def _holder_or_none(lock: MigrationLock) -> Holder | None:
    """The lock's holder for a log line; a failed lookup only leaves it unnamed."""
    try:
        return lock.holder()
    except Exception:  # any driver's error (SQLAlchemy's or a bare driver's)
        return None


def _held_by(holder: Holder | None) -> str:
    return f"another process ({holder.describe()})" if holder else "another process"

"""The migration lock with the bare driver, before the app is loaded: take it, or wait on it.

A replica of the fast path (`runner.fastpath`) that finds the database behind tries the
migration lock on its one bare-driver connection. The replica that wins it is the only one
to load the app: it hands the lock on to the full path (`runner.migration`), which takes it
again on a connection of its own. Every other replica polls the lock and the version table
with the bare driver, as the full path's waiters do (on a connection it closes between
two polls), and exits once the head arrives, without importing Flask, SQLAlchemy, Alembic
or the app. The key is the lock backends' own
(`runner.locks`), so a fast waiter and a full-path holder exclude each other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from runner import fastpath, locks, signals
from runner.fastpath import DEFAULT_VERSION_TABLE, DriverTarget

_STATEMENTS = {
    "postgresql": ("SELECT pg_try_advisory_lock(%(key)s), pg_backend_pid()",
                   "SELECT pg_advisory_unlock(%(key)s)"),
    "mysql": ("SELECT GET_LOCK(%(key)s, 0), NULL", "SELECT RELEASE_LOCK(%(key)s)"),
}
"""Per backend: try the lock without waiting (and the server session it is tried on where
that matters), give it back."""


def migration_lock_name(target: DriverTarget) -> str:
    """The migration lock's name for the database `target` names and the stock version table,
    as runner.migration names it from the app's URL."""
    database = target.params.get("dbname", target.params.get("database"))
    return locks.lock_name(database, DEFAULT_VERSION_TABLE, None)


class BareLock(locks.MigrationLock):
    """The migration lock on one bare-driver connection, which also reads the version table."""

    def __init__(self, target: DriverTarget, connect_timeout: float) -> None:
        super().__init__(None, migration_lock_name(target))
        self._postgresql = target.backend == "postgresql"
        self._try_lock, self._unlock = _STATEMENTS["postgresql" if self._postgresql else "mysql"]
        extra: dict[str, Any] = {}
        if self._postgresql:
            self._key: int | str = locks.advisory_key(self.name)
            # Named as the full path's lock connection, so that waiters name this holder;
            # no server-side prepared statements, which a pooler would hand to other sessions.
            extra = {"application_name": locks.application_name(locks.this_holder()),
                     "prepare_threshold": None}
        else:
            self._key = locks.user_lock_name(self.name)
        self._target = target
        self._connect_args = (connect_timeout, extra)
        # The first connection now: a server that refuses it is for the caller to wait out.
        self._open: Any = self._new_connection()
        self._held = False
        self._taken_on: int | None = None
        self.driver = "psycopg" if self._postgresql else "pymysql"
        """The DB-API module of the connection, as SQLAlchemy names the driver."""

    def _new_connection(self) -> Any:
        timeout, extra = self._connect_args
        connection = fastpath.connect(self._target, timeout, **extra)
        if connection is None:
            raise ValueError(f"not the server {self._target.backend}:// names")
        return connection

    @property
    def _connection(self) -> Any:
        """The connection; opened again after `idle`."""
        if self._open is None:
            self._open = self._new_connection()
        return self._open

    def detach(self, driver: str) -> locks.TakenConnection | None:
        """The connection, holding the lock, for the full path's lock on `driver` to take
        over (this object lets go of it); None when it is another driver's."""
        if driver != self.driver or not self._held:
            return None
        taken = locks.TakenConnection(self._open, self._taken_on)
        self._open, self._held = None, False
        return taken

    def try_acquire(self) -> bool:
        if not self._held:
            ((taken, self._taken_on),) = fastpath.fetch_all(self._connection, self._try_lock,
                                                            {"key": self._key})
            self._held = taken == 1
        return self._held

    def release(self) -> None:
        if self._held:
            fastpath.fetch_all(self._connection, self._unlock, {"key": self._key})
            self._held = False

    def holder(self) -> locks.Holder | None:
        if not self._postgresql:
            return self._mysql_holder()
        rows = fastpath.fetch_all(self._connection, locks.POSTGRESQL_HOLDER,
                                  locks.advisory_key_halves(int(self._key)))
        return locks.postgresql_holder(rows[0] if rows else None)

    def _mysql_holder(self) -> locks.Holder | None:
        return locks.mysql_lock_holder(
            lambda query, params: fastpath.fetch_all(self._connection, query, params),
            str(self._key))

    def current_revisions(
        self, version_table: str = DEFAULT_VERSION_TABLE, schema: str | None = None
    ) -> tuple[str, ...] | None:
        query = fastpath.version_query(version_table, schema)
        return None if query is None else fastpath.read_rows(self._target, self._connection,
                                                             query)

    def idle(self) -> None:
        opened, self._open, self._held = self._open, None, False
        if opened is not None:
            with contextlib.suppress(Exception):  # closing the session frees what it held
                opened.close()

    def close(self) -> None:
        """Give the lock back at once (the full path takes it next), then disconnect."""
        if self._open is None:
            return  # detached, or let go of already
        with contextlib.suppress(Exception):  # closing the connection frees it anyway
            self.release()
        self.idle()


def take_or_wait(
    lock: BareLock,
    head: str,
    timeout: float,
    waiting: Callable[[], None],
    sleep: Callable[[float], None] = signals.sleep,
) -> bool:
    """Take the lock for the full path (False: the database is still behind, the lock is
    ours), or wait while another process holds it until the version table holds exactly
    `head` (True; the lock may be ours then: close it). `waiting()` is called once, when
    this process starts to wait; LockTimeout after `timeout` seconds."""

    def at_head() -> bool:
        return set(lock.current_revisions() or ()) == {head}

    if not lock.try_acquire():
        waiting()
        if not locks.acquire(lock, timeout, stop_waiting=at_head, sleep=sleep, announce=False):
            return True
    # Ours now: the holder may have brought the database to head before it let go.
    return at_head()

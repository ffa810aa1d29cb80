"""PostgreSQL: a session-level advisory lock on an autocommit connection of its own."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from runner import database
from runner.errors import ConfigError
from runner.locks import (
    POSTGRESQL_HOLDER,
    ConnectionLock,
    Holder,
    TakenConnection,
    advisory_key,
    advisory_key_halves,
    application_name,
    postgresql_holder,
    this_holder,
)

# The advisory lock on `key` as pg_locks shows it: a bigint key is split into
# classid (high half) and objid (low half), with objsubid 1.
_OUR_ADVISORY_LOCK = """
    l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
    AND l.classid::bigint = :high AND l.objid::bigint = :low
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""

POOLER_HINT = (
    "the lock's connection goes through a transaction-pooling proxy such as PgBouncer, where"
    " a session advisory lock excludes nothing: point MIGRATION_DATABASE_URL"
    " (or --migration-database-url) at the database directly"
)



class PostgresqlLock(ConnectionLock):
    """`pg_try_advisory_lock(key)`; the server frees it when the connection ends."""

    def __init__(self, url: URL, name: str, adopted: TakenConnection | None = None) -> None:
        super().__init__(url, name)
        self.key = advisory_key(name)
        connect_args: dict[str, Any] = {"application_name": application_name(this_holder())}
        if url.get_driver_name() == "psycopg":
            # No server-side prepared statements: a pooler would hand them to other sessions.
            connect_args["prepare_threshold"] = None
        self._engine = database.create_engine(url, extra_connect_args=connect_args)
        # Autocommit: an idle transaction here would block CREATE INDEX CONCURRENTLY.
        self._open = self._open_connection(adopted)
        self._session_checked = False
        # The backend the fast path took the lock on, when this connection holds it already.
        self._taken_before = adopted.backend if adopted else None

    @property
    def _key_halves(self) -> dict[str, int]:
        return advisory_key_halves(self.key)

    def try_acquire(self) -> bool:
        if not self._session_checked:
            # Before the first try too, so that a pooler is found without leaving a lock on
            # one of its server sessions, where no later statement of ours may reach it
            # (for a lock the fast path took, before this try takes another elsewhere).
            self._require_own_session(taken_on=self._taken_before)
            self._session_checked = True
        query = sa.text("SELECT pg_try_advisory_lock(:key), pg_backend_pid()")
        taken, backend = self._connection.execute(query, {"key": self.key}).one()
        if not taken and self._taken_before is None:
            return False
        # Taken; or refused although this connection took it before: a pooler moved it.
        self._require_own_session(taken_on=backend)
        return True

    def idle(self) -> None:
        super().idle()
        if self._taken_before is not None:
            # The fast path's session is gone, and its lock with it: a lock of our own now.
            self._taken_before = None
            self._session_checked = False

    def _require_own_session(self, taken_on: int | None) -> None:
        """ConfigError, with the lock let go, unless this connection is one server session.

        Through a transaction-pooling proxy each statement may run on another server
        session, and our session may serve other clients: another connection must get
        another backend, our backend must stay the same from one transaction to the
        next, and once we hold the lock (taken on backend `taken_on`) it must show in
        pg_locks for our backend.
        """
        held = sa.text(
            "SELECT pg_backend_pid(), EXISTS (SELECT 1 FROM pg_locks l WHERE"
            f" {_OUR_ADVISORY_LOCK} AND l.pid = pg_backend_pid())"
        )
        backend, holds = self._connection.execute(held, self._key_halves).one()
        other_backend = None
        if taken_on is not None:
            # A second connection only for the holder, which may have two: a waiter holds
            # one at most (every replica of a rollout starts at once).
            with self._engine.connect() as other:
                other_backend = other.scalar(sa.text("SELECT pg_backend_pid()"))
        again = self._connection.scalar(sa.text("SELECT pg_backend_pid()"))
        own_session = backend == again != other_backend
        if own_session and (taken_on is None or (holds and taken_on == backend)):
            return
        seen = ""
        if taken_on is not None:
            self._release_pooled(taken_on)
            seen = f", the lock taken on backend {taken_on} and shown for {backend}: {bool(holds)}"
        raise ConfigError(
            f"{POOLER_HINT} (backend {backend}{seen}; another connection got backend"
            f" {other_backend}, the next transaction backend {again})"
        )

    def _release_pooled(self, taken_on: int) -> None:
        """Free the lock we took through a pooler (and the fast path before us), wherever it is now.

        Unlock as often as the session this connection reaches holds it (other replicas
        may have taken it there again); the pooled session it was taken on may be out of
        reach, so end that session if it still holds our lock and serves no client now
        (idle): the pooler opens another, and no lock stays behind to block the next deploy.
        """
        unlock = sa.text("SELECT pg_advisory_unlock(:key)")
        for _ in range(8):
            if not self._connection.scalar(unlock, {"key": self.key}):
                break
        terminate = sa.text(
            "SELECT pg_terminate_backend(a.pid) FROM pg_locks l"
            " JOIN pg_stat_activity a ON a.pid = l.pid"
            f" WHERE {_OUR_ADVISORY_LOCK} AND l.pid IN (:taken_on, :taken_before)"
            " AND a.state = 'idle' AND a.pid <> pg_backend_pid()"
        )
        still_held = sa.text(f"SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE {_OUR_ADVISORY_LOCK}"
                             " AND l.pid IN (:taken_on, :taken_before))")
        taken = {**self._key_halves, "taken_on": taken_on, "taken_before": self._taken_before}
        # That session may be busy with another client's statement right now: a few tries.
        for _ in range(20):
            self._connection.execute(terminate, taken)
            if not self._connection.scalar(still_held, taken):
                break
            time.sleep(0.1)

    def release(self) -> None:
        self._connection.scalar(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})

    def holder(self) -> Holder | None:
        row = self._connection.exec_driver_sql(POSTGRESQL_HOLDER, self._key_halves).first()
        return postgresql_holder(None if row is None else tuple(row))

    def close(self) -> None:
        self._close_connection()
        self._engine.dispose()

"""MySQL and MariaDB: a named user lock on a connection of its own."""

from __future__ import annotations

import contextlib
import json
import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from runner import database
from runner.locks import (
    ConnectionLock,
    Holder,
    TakenConnection,
    mysql_beacon_prefix,
    mysql_lock_holder,
    this_holder,
    user_lock_name,
)

_BEACON_WAIT = 366 * 24 * 3600
"""GET_LOCK's timeout for the beacon: longer than any migration."""


class MysqlLock(ConnectionLock):
    """`GET_LOCK(name, 0)`; the server frees it when the connection ends.

    Who holds it: IS_USED_LOCK gives only a connection id, and without
    performance_schema (off by default on MariaDB) no other session can read a
    connection's attributes. So the holder shows itself in the process list: a
    second connection of its own (the beacon) runs a GET_LOCK on a latch that the
    lock's connection holds, in a statement whose comment carries the holder's
    host, pid and start time and the lock connection's id. That statement runs
    exactly as long as the latch is held, so it ends when the lock is released or
    its connection dies, and it writes nothing into the database.
    """

    def __init__(self, url: URL, name: str, adopted: TakenConnection | None = None) -> None:
        super().__init__(url, name)
        self.lock_name = user_lock_name(name)
        self._latch_name = f"{self.lock_name}/holder"
        self._engine = database.create_engine(url)
        self._open = self._open_connection(adopted)
        self._beacon: threading.Thread | None = None

    def try_acquire(self) -> bool:
        query = sa.text("SELECT GET_LOCK(:name, 0)")
        acquired = bool(self._connection.scalar(query, {"name": self.lock_name}) == 1)
        if acquired and self._beacon is None:
            self._start_beacon()
        return acquired

    def _start_beacon(self) -> None:
        """Show this process in the process list for as long as it holds the latch."""
        latch = sa.text("SELECT GET_LOCK(:name, 0), CONNECTION_ID()")
        taken, connection_id = self._connection.execute(latch, {"name": self._latch_name}).one()
        if taken != 1:
            return
        identity = json.dumps(this_holder().as_dict()).replace("*/", "")
        statement = (
            f"{mysql_beacon_prefix(self.lock_name, connection_id)}{identity} */"
            f" GET_LOCK(%s, {_BEACON_WAIT})"
        )
        started = threading.Event()

        def wait_on_latch() -> None:
            # Any failure only leaves the holder unnamed; the lock itself is unaffected.
            with contextlib.suppress(Exception), self._engine.connect() as beacon:
                started.set()
                beacon.exec_driver_sql(statement, (self._latch_name,))
            started.set()

        self._beacon = threading.Thread(target=wait_on_latch, name="lock-holder-beacon",
                                        daemon=True)
        self._beacon.start()
        started.wait(10)

    def _stop_beacon(self) -> None:
        if self._beacon is not None:
            self._beacon.join(10)
            self._beacon = None

    def release(self) -> None:
        self._connection.scalar(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": self._latch_name})
        self._stop_beacon()
        self._connection.scalar(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": self.lock_name})

    def holder(self) -> Holder | None:
        def fetch(query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
            return [tuple(row) for row in self._connection.exec_driver_sql(query, params)]

        return mysql_lock_holder(fetch, self.lock_name)

    def kill_query(self, connection_id: int) -> None:
        """Stop the statement running on another connection of ours (KILL QUERY)."""
        self._connection.execute(sa.text(f"KILL QUERY {int(connection_id)}"))

    def close(self) -> None:
        self._close_connection()
        self._stop_beacon()
        self._engine.dispose()

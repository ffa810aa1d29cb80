"""MySQL and MariaDB: a named user lock (`GET_LOCK`) on the runner's own connection.

Who holds it: IS_USED_LOCK gives only a connection id, and without performance_schema
(off by default on MariaDB) no other session can read a connection's attributes. So the
holder shows itself in the process list: a second connection of its own (the beacon) runs
a GET_LOCK on a latch that the lock's connection holds, in a statement whose comment
carries the holder's host, pid and start time and the lock connection's id. That statement
runs exactly as long as the latch is held, so it ends when the lock is released or its
connection dies, and it writes nothing into the database.
"""

from __future__ import annotations

import contextlib
import json
import threading
from typing import Any

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
)
from runner.urls import DatabaseUrl

_BEACON_WAIT = 365 * 24 * 3600
"""GET_LOCK's timeout for the beacon, and the lock connection's wait_timeout: longer than
any migration (and the most wait_timeout takes)."""

BARE_QUERY_PARAMETERS = frozenset({"charset"})
"""URL query parameters PyMySQL takes as every MySQL driver does; with any other, the URL's
own driver connects (its parameters are its own)."""

_LOCK_OWNER = "SELECT IS_USED_LOCK(%s)"

HOLDER_ROWS = (
    "SELECT ID, HOST, INFO FROM information_schema.PROCESSLIST"
    " WHERE ID = %s OR INFO LIKE %s"
)
"""The process list rows (ID, HOST, INFO) of the lock's connection and of the statement
its holder shows itself by (the beacon)."""

_VERSION_TABLE_EXISTS = (
    "SELECT COUNT(*) FROM information_schema.TABLES"
    " WHERE TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND TABLE_NAME = %s"
)

_CONNECTED = "SHOW GLOBAL STATUS LIKE 'Threads_connected'"
"""The sessions on the server now (MariaDB and MySQL 8 alike; no privilege needed)."""

READ_TIMEOUT = 60
"""Seconds a statement on the lock's connection may take (all are short): a server that
went silent is found out, not waited for."""


def user_lock_name(name: str) -> str:
    """MySQL's GET_LOCK name for the lock `name` (lock names are server-wide, <= 64 chars)."""
    return f"{APPLICATION_NAME_PREFIX}/{hashed(name, 40)}"


def beacon_prefix(lock: str, connection_id: int) -> str:
    """How the statement that names the holder of lock `lock`, held by connection
    `connection_id`, starts; the holder's JSON record follows, then ` */`."""
    return f"SELECT /* {APPLICATION_NAME_PREFIX} holder {lock} {connection_id} "


def holder_from_rows(lock: str, connection_id: int, rows: Rows) -> Holder:
    """The holder of `lock`, held by `connection_id`, from its process list rows."""
    prefix = beacon_prefix(lock, connection_id)
    for _, _, info in rows:
        if info and info.startswith(prefix):
            return Holder.from_dict(json.loads(info[len(prefix):].split(" */", 1)[0]))
    # Not a runner, or it has not shown itself yet: the client's address is all there is.
    client = next((host for id_, host, _ in rows if id_ == connection_id), None)
    why = ("it holds the lock without a runner's beacon" if client
           else "its connection is hidden from this user (grant PROCESS)")
    return Holder(host=client.rsplit(":", 1)[0] if client else None, pid=None,
                  why_unknown=why)


class MysqlDriver(Driver):
    """`GET_LOCK(name, 0)`; the server frees it when the connection ends."""

    backend = "mysql"

    def __init__(self, url: DatabaseUrl, name: str, connect_timeout: float) -> None:
        super().__init__(url, name, connect_timeout)
        self.user_lock = user_lock_name(name)
        self._latch = f"{self.user_lock}/holder"
        self._beacon: threading.Thread | None = None

    def _open(self, read_timeout: float | None = READ_TIMEOUT) -> Any:
        timeout = max(1, int(self.connect_timeout))
        if not set(dict(self.url.query)) <= BARE_QUERY_PARAMETERS:
            return self._open_through_sqlalchemy({"connect_timeout": timeout})
        import pymysql  # type: ignore[import-untyped]

        connection = pymysql.connect(connect_timeout=timeout, read_timeout=read_timeout,
                                     write_timeout=timeout, **self.connect_arguments("database"))
        # SQLAlchemy's mariadb:// dialect refuses a server that is not MariaDB.
        if self.url.backend == "mariadb" and "mariadb" not in connection.get_server_info().lower():
            connection.close()
            from runner.errors import ConfigError

            raise ConfigError(f"{self.url.describe()} is not a MariaDB server: use mysql://")
        return connection

    def poll(self, table: VersionTable | None) -> Poll:
        if self.held:
            return Poll(taken=True)
        with self.scope():
            ((taken,),) = self.fetch("SELECT GET_LOCK(%s, 0)", (self.user_lock,))
            if taken == 1:
                self.held = True
                # The lock's connection idles while the app's upgrade runs: a server's short
                # wait_timeout must not close it (and free the lock) mid-upgrade.
                self.fetch(f"SET SESSION wait_timeout = {_BEACON_WAIT}")
                self._show_holder()
                return Poll(taken=True)
            ((_, connected),) = self.fetch(_CONNECTED)
            ((total,),) = self.fetch("SELECT @@max_connections")
            self.room = (int(total) - int(connected), int(total))
            return Poll(taken=False,
                        versions=None if table is None else self._versions(table))

    def read_versions(self, table: VersionTable) -> tuple[str, ...]:
        with self.scope():
            return self._versions(table)

    def _versions(self, table: VersionTable) -> tuple[str, ...]:
        ((exists,),) = self.fetch(_VERSION_TABLE_EXISTS, (table.schema, table.name))
        if not exists:
            return ()
        name = quote_identifier(table.name, "`")
        if table.schema:
            name = f"{quote_identifier(table.schema, '`')}.{name}"
        return tuple(str(row[0]) for row in self.fetch(f"SELECT version_num FROM {name}"))

    def connection_id(self) -> int:
        """This connection's id on the server (what KILL and the process list name)."""
        with self.scope():
            ((connection_id,),) = self.fetch("SELECT CONNECTION_ID()")
        return int(connection_id)

    def _show_holder(self) -> None:
        """Show this process in the process list for as long as it holds the latch."""
        ((taken, connection_id),) = self.fetch("SELECT GET_LOCK(%s, 0), CONNECTION_ID()",
                                               (self._latch,))
        if taken != 1:
            return
        identity = json.dumps(this_holder().as_dict()).replace("*/", "")
        statement = (f"{beacon_prefix(self.user_lock, connection_id)}{identity} */"
                     f" GET_LOCK(%s, {_BEACON_WAIT})")
        started = threading.Event()

        def wait_on_latch() -> None:
            # Any failure only leaves the holder unnamed; the lock itself is unaffected.
            with contextlib.suppress(Exception):
                beacon = self._open(read_timeout=None)
                try:
                    started.set()
                    with contextlib.closing(beacon.cursor()) as cursor:
                        cursor.execute(statement, (self._latch,))
                finally:
                    beacon.close()
            started.set()

        self._beacon = threading.Thread(target=wait_on_latch, name="lock-holder-beacon",
                                        daemon=True)
        self._beacon.start()
        started.wait(10)

    def release(self) -> None:
        if not self.held:
            return
        with self.scope():
            self.fetch("SELECT RELEASE_LOCK(%s)", (self._latch,))
            if self._beacon is not None:
                self._beacon.join(10)
                self._beacon = None
            self.fetch("SELECT RELEASE_LOCK(%s)", (self.user_lock,))
        self.held = False

    def holder(self) -> Holder | None:
        with self.scope():
            ((connection_id,),) = self.fetch(_LOCK_OWNER, (self.user_lock,))
            if connection_id is None:
                return None
            beacon = beacon_prefix(self.user_lock, connection_id) + "%"
            rows = self.fetch(HOLDER_ROWS, (connection_id, beacon))
        return holder_from_rows(self.user_lock, connection_id, rows)

    def kill_query(self, connection_id: int) -> None:
        """Stop the statement running on another connection of ours (KILL QUERY)."""
        with self.scope():
            self.fetch(f"KILL QUERY {int(connection_id)}")

    def close(self) -> None:
        super().close()
        if self._beacon is not None:
            self._beacon.join(10)
            self._beacon = None

"""Stop an upgrade at a safe point on a signal, leaving no statement of ours on the server.

PostgreSQL and SQLite roll a revision back whole, so a signal cancels the running
statement on the server and the upgrade rolls back. MySQL/MariaDB commit DDL as it
runs, so the revision in progress may finish within the stop timeout and the upgrade
stops before the next one; past the timeout its statement is killed with KILL QUERY.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from runner.errors import Interrupted
from runner.log import emit
from runner.signals import StopRequest

CANCEL_REPEAT = 0.5
"""How often, in seconds, a cancel is sent again while the upgrade has not ended."""

TRANSACTIONAL = ("postgresql", "sqlite")


@dataclass(frozen=True)
class _Watched:
    """One connection the upgrade opened: its dialect, driver connection and server id."""

    connection: sa.Connection
    backend: str
    dbapi: Any
    server_id: int | None


class UpgradeStopper:
    """Watches the connections env.py opens during an upgrade and stops them on a signal."""

    def __init__(
        self,
        request: StopRequest,
        steps: Sequence[str],
        stop_timeout: float,
        kill_query: Callable[[int], None] | None,
        finish_first: bool,
    ) -> None:
        self.request = request
        self.finish_first = finish_first
        self.steps = steps
        self.stop_timeout = stop_timeout
        self.kill_query = kill_query
        self.killed_revision: str | None = None
        self._watched: list[_Watched] = []
        self._steps_at_signal: int | None = None
        self._done = threading.Event()

    def on_connect(self, connection: sa.Connection, *branch: Any) -> None:
        """engine_connect: remember the connection; on SQLite make its DDL transactional."""
        # (SQLAlchemy 1.4 also passes `branch`, which 2.0 dropped.)
        backend = connection.dialect.name
        dbapi: Any = connection.connection.dbapi_connection
        if backend == "sqlite":
            _make_transactional(connection, dbapi)
        self._watched.append(_Watched(connection, backend, dbapi, server_id(dbapi)))

    @property
    def server_ids(self) -> list[int]:
        """The server ids (PostgreSQL backend pids, MySQL connection ids) of the upgrade's
        connections, newest first: the one running a statement is most likely the last."""
        return [watched.server_id for watched in reversed(self._watched)
                if watched.server_id is not None]

    def before_execute(self, connection: sa.Connection, *args: Any) -> None:
        """before_cursor_execute: the safe point; no new statement starts once we stop."""
        if self.request.signum is None:
            return
        if not any(watched.connection is connection for watched in self._watched):
            return  # not the upgrade's: the lock's own, say
        if connection.dialect.name in TRANSACTIONAL or self.killed_revision is not None:
            raise Interrupted(self.request.signum)
        if self._steps_at_signal is None:
            self._steps_at_signal = len(self.steps)
        # MySQL: finish the revision in progress; its successor does not start, nor does
        # the first one when the signal came before it.
        if self._steps_at_signal == 0 or len(self.steps) > self._steps_at_signal:
            raise Interrupted(self.request.signum)

    def watch(self) -> None:
        """The watcher thread: wait for a signal or the end, then stop the upgrade's statements."""
        while not self._done.is_set():
            if self.request.wait(0.1):
                break
        if self._done.is_set() or self.request.signum is None:
            return
        name = _signal_name(self.request.signum)
        if self.finish_first:
            self._finish_then_kill(name)
        else:
            emit("runner.stopping", f"{name}: cancelling the running statement; the revision"
                 " in progress rolls back", level="warning", signal=name, action="cancel")
            while not self._done.is_set():
                self._cancel_transactional()
                self._done.wait(CANCEL_REPEAT)

    def _finish_then_kill(self, name: str) -> None:
        if self._steps_at_signal is None:
            self._steps_at_signal = len(self.steps)
        revision = self.steps[-1] if self.steps else None
        emit("runner.stopping", f"{name}: letting revision {revision} finish (up to"
             f" {self.stop_timeout:g}s, RUNNER_STOP_TIMEOUT), then stopping", level="warning",
             signal=name, action="finish", revision=revision)
        self._cancel_transactional()
        deadline = threading.Event()
        timer = threading.Timer(self.stop_timeout, deadline.set)
        timer.start()
        try:
            while not (self._done.is_set() or deadline.is_set()):
                if len(self.steps) > self._steps_at_signal:
                    return
                self._done.wait(0.05)
        finally:
            timer.cancel()
        if self._done.is_set() or len(self.steps) > self._steps_at_signal:
            return
        self.killed_revision = revision
        emit("runner.stopping", f"{name}: revision {revision} still running after"
             f" {self.stop_timeout:g}s: killing its statement; it may be half-applied",
             level="warning", signal=name, action="kill", revision=revision)
        kill = self.kill_query or (lambda server_id: None)
        for server_id in self.server_ids:
            # The lock's driver raises its own driver's errors; one failed KILL must not
            # spare the others.
            with contextlib.suppress(Exception):
                kill(server_id)

    def _cancel_transactional(self) -> None:
        for watched in self._watched:
            with contextlib.suppress(Exception):
                if watched.backend == "postgresql":
                    cancel = getattr(watched.dbapi, "cancel_safe", None) or watched.dbapi.cancel
                    cancel()
                elif watched.backend == "sqlite":
                    watched.dbapi.interrupt()

    def finish(self) -> None:
        """The upgrade has ended: stop watching."""
        self._done.set()


@contextlib.contextmanager
def stoppable_upgrade(
    request: StopRequest,
    steps: Sequence[str],
    stop_timeout: float,
    kill_query: Callable[[int], None] | None = None,
    finish_first: bool = False,
) -> Iterator[UpgradeStopper]:
    """Watch every connection opened inside the block; a signal stops them at a safe point.

    `finish_first` (MySQL/MariaDB, whose DDL cannot roll back) lets the revision in
    progress finish within `stop_timeout` before its statement is killed.
    """
    stopper = UpgradeStopper(request, steps, stop_timeout, kill_query, finish_first)
    # Bound once: event.remove needs the very objects that were registered.
    on_connect, before_execute = stopper.on_connect, stopper.before_execute
    event.listen(Engine, "engine_connect", on_connect)
    event.listen(Engine, "before_cursor_execute", before_execute)
    watcher = threading.Thread(target=stopper.watch, name="runner-stopper", daemon=True)
    watcher.start()
    try:
        yield stopper
    finally:
        stopper.finish()
        watcher.join()
        event.remove(Engine, "engine_connect", on_connect)
        event.remove(Engine, "before_cursor_execute", before_execute)


def server_id(dbapi: Any) -> int | None:
    """A DB-API connection's id on the server, as its driver exposes it: psycopg 3's
    backend pid, psycopg2's, or the MySQL drivers' connection (thread) id."""
    info = getattr(dbapi, "info", None)
    for candidate in (getattr(info, "backend_pid", None), getattr(dbapi, "get_backend_pid", None),
                      getattr(dbapi, "thread_id", None), getattr(dbapi, "connection_id", None)):
        value = candidate() if callable(candidate) else candidate
        if isinstance(value, int):
            return value
    return None


def _make_transactional(connection: sa.Connection, dbapi: Any) -> None:
    """Have pysqlite send BEGIN for every transaction, so a revision's DDL rolls back whole."""
    # pysqlite commits DDL as it runs unless it is told to leave transactions to us.
    dbapi.isolation_level = None

    def begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN")

    event.listen(connection, "begin", begin)


def _signal_name(signum: int) -> str:
    return signal.Signals(signum).name

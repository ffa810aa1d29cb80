"""With the database behind, `migrate` takes the migration lock or waits on it before the
app is loaded: only the replica that wins the lock loads the app; a waiter with a manifest
exits once the head arrives, without ever loading it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from runner.errors import ExitCode
from support import (
    KINDS,
    REPLICAS,
    counted_env,
    event_names,
    events,
    execute,
    finish,
    hold_lock,
    imports,
    killed_on_failure,
    one_error,
    read_until,
    run_runner,
    script_heads,
    start_herd,
    start_runner,
    version_rows,
)

HEAD = script_heads()[0]


@pytest.fixture(params=KINDS)
def server_url(request: pytest.FixtureRequest) -> str:
    """A fresh PostgreSQL, then MariaDB, database (SQLite's file lock is the full path's)."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


class Waiter:
    """A `runner migrate` started in the background, once it waits on the lock."""

    def __init__(self, env: dict[str, str], project: Path) -> None:
        self.process = start_runner(["migrate"], env, cwd=project)
        self.pid = self.process.pid
        with killed_on_failure(self.process):
            self.seen = read_until(self.process, '"lock.waiting"')
            # Every line read is one event (events fails on any other), the last the waiting.
            records = [events(line) for line in self.seen]
            assert all(len(record) == 1 for record in records), "".join(self.seen)
            self.waiting: dict[str, Any] = records[-1][0]
            assert self.waiting["event"] == "lock.waiting", "".join(self.seen)

    def finish(self) -> subprocess.CompletedProcess[str]:
        return finish(self.process, self.seen)


def sessions_opened(admin_url: str, database: str) -> int:
    """How many sessions PostgreSQL has counted as opened on `database` so far
    (pg_stat_database.sessions: client backends only). A backend counts its session when it
    first goes idle, before the client's connect returns."""
    engine = sa.create_engine(admin_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(sa.text(
                "SELECT sessions FROM pg_stat_database WHERE datname = :name"),
                {"name": database}) or 0)
    finally:
        engine.dispose()


def await_polls(admin_url: str, database: str, pid: int, count: int, timeout: float = 60
                ) -> None:
    """Wait until the runner `pid` has polled the lock `count` times. Each poll ends its
    transaction: its session goes idle again, with a new state_change in pg_stat_activity
    (on whichever session it polled from)."""
    seen: set[tuple[int, object]] = set()
    deadline = time.monotonic() + timeout
    engine = sa.create_engine(admin_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            while len(seen) < count:
                seen.update((int(session), change) for session, change in connection.execute(
                    sa.text("SELECT pid, state_change FROM pg_stat_activity"
                            " WHERE datname = :name AND state = 'idle'"
                            " AND application_name LIKE :runner"),
                    {"name": database, "runner": f"migrate-runner % {pid}"}))
                connection.commit()  # the next reading in a new snapshot
                if time.monotonic() > deadline:
                    pytest.fail(f"saw {len(seen)} polls of the waiter in {timeout:g}s")
                time.sleep(0.02)
    finally:
        engine.dispose()


POLLS = 8
"""Polls watched while a waiter waits: its pauses grow from 50 ms, so about 2 s."""


def test_a_waiter_exits_at_head_without_loading_the_app(server_url: str, project: Path) -> None:
    env = counted_env(project, server_url)
    database = str(sa.make_url(server_url).database)
    admin = sa.make_url(server_url).set(database="postgres").render_as_string(
        hide_password=False)
    postgresql = server_url.startswith("postgresql")
    lock = hold_lock(server_url)
    try:
        before = sessions_opened(admin, database) if postgresql else 0
        waiter = Waiter(env, project)
        with killed_on_failure(waiter.process):
            if postgresql:
                # The test's lock connection is named after this process: so is the holder.
                assert waiter.waiting["holder"]["pid"] == os.getpid()
                # On a server with room, a waiter keeps its one connection from one poll to
                # the next: over POLLS polls, the sessions opened on the database are its
                # one (and at most one more: a reconnection), not one a poll.
                await_polls(admin, database, waiter.pid, POLLS)
                opened = sessions_opened(admin, database) - before
                assert 1 <= opened <= 2, f"{opened} sessions opened over {POLLS} polls"
            # What the holder's upgrade leaves behind, committed while it still holds the lock.
            execute(server_url,
                    "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)",
                    f"INSERT INTO alembic_version VALUES ('{HEAD}')")
            result = waiter.finish()
    finally:
        lock.close()
    assert result.returncode == ExitCode.OK, result.stderr
    assert imports(project) == 1
    assert event_names(result.stderr) == ["db.ready", "lock.waiting", "migrate.noop"]
    (noop,) = [record for record in events(result.stderr) if record["event"] == "migrate.noop"]
    assert noop["path"] == "fast"
    assert noop["heads"] == [HEAD]


def test_a_lock_given_back_behind_is_taken_and_migrated(server_url: str, project: Path) -> None:
    env = counted_env(project, server_url)
    lock = hold_lock(server_url)
    try:
        waiter = Waiter(env, project)
    finally:
        lock.close()  # as a migrator that failed before its first revision
    result = waiter.finish()
    assert result.returncode == ExitCode.OK, result.stderr
    names = event_names(result.stderr)
    assert names.index("lock.acquired") < names.index("migrate.applied"), names
    assert version_rows(server_url) == [HEAD]
    # The lock went with the process: the next replica finds it free, and head.
    loaded = imports(project)
    again = run_runner(["migrate"], env, cwd=project)
    assert again.returncode == ExitCode.OK, again.stderr
    assert event_names(again.stderr) == ["db.ready", "migrate.noop"]
    assert imports(project) == loaded


def test_only_the_replica_that_wins_the_lock_loads_the_app(
    server_url: str, project: Path
) -> None:
    counted_env(project, server_url)
    results = start_herd(server_url, cwd=project, extra_env={"FLASK_APP": "counted:create_app()"})
    assert [result.returncode for result in results] == [0] * REPLICAS, [
        result.stderr for result in results if result.returncode]
    logs = [event_names(result.stderr) for result in results]
    assert sum("migrate.applied" in names for names in logs) == 1
    # A waiter that finds the lock free just as the head arrives gives it back unlogged:
    # the log shows one replica taking the migration lock, the one that migrated.
    assert sum("lock.acquired" in names for names in logs) == 1, logs
    noops = [record for result in results for record in events(result.stderr)
             if record["event"] == "migrate.noop"]
    assert [record["path"] for record in noops] == ["fast"] * (REPLICAS - 1)
    assert imports(project) == 1 + 1  # prepare, then the replica that migrated


def test_sigterm_while_waiting_exits_143(server_url: str, project: Path) -> None:
    env = counted_env(project, server_url)
    lock = hold_lock(server_url)
    try:
        waiter = Waiter(env, project)
        waiter.process.send_signal(signal.SIGTERM)
        result = waiter.finish()
    finally:
        lock.close()
    assert result.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in result.stderr
    assert imports(project) == 1
    assert event_names(result.stderr)[-1] == "runner.interrupted"


def test_the_lock_timeout_exits_4_naming_the_holder(server_url: str, project: Path) -> None:
    env = counted_env(project, server_url)
    lock = hold_lock(server_url)
    try:
        result = run_runner(["migrate", "--lock-timeout", "2"], env, cwd=project)
    finally:
        lock.close()
    error = one_error(result, ExitCode.LOCK_TIMEOUT)
    assert error["event"] == "lock.timeout"
    assert "RUNNER_LOCK_TIMEOUT" in error["message"]
    assert imports(project) == 1
    if server_url.startswith("postgresql"):
        assert error["holder"]["pid"] == os.getpid()
        assert f"pid {os.getpid()}" in error["message"]

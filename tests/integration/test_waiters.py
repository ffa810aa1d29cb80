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
    COUNTED_APP,
    REPLICAS,
    event_names,
    events,
    execute,
    hold_lock,
    one_error,
    prepare,
    read_until,
    run_runner,
    runner_env,
    script_heads,
    start_herd,
    start_runner,
    version_rows,
)

HEAD = script_heads()[0]
# The example's app, recording each process that imports it.
SERVERS = [
    pytest.param("postgresql", marks=pytest.mark.postgresql),
    pytest.param("mysql", marks=pytest.mark.mysql),
]


@pytest.fixture(params=SERVERS)
def server_url(request: pytest.FixtureRequest) -> str:
    """A fresh PostgreSQL, then MariaDB, database (SQLite's file lock is the full path's)."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


def fast_env(url: str, project: Path) -> dict[str, str]:
    """The environment of a prepared project whose app counts the processes importing it."""
    (project / "counted.py").write_text(COUNTED_APP)
    env = runner_env(url, FLASK_APP="counted:create_app()")
    prepare(project, env)
    return env


def imports(project: Path) -> int:
    """How many processes imported the app so far (`runner prepare` is the first)."""
    return len((project / "imports.log").read_text().split())


class Waiter:
    """A `runner migrate` started in the background, once it waits on the lock."""

    def __init__(self, env: dict[str, str], project: Path) -> None:
        self.process = start_runner(["migrate"], env, cwd=project)
        self.pid = self.process.pid
        self.seen = read_until(self.process, '"lock.waiting"')
        # Every line read is one event (events fails on any other), the last the waiting.
        records = [events(line) for line in self.seen]
        assert all(len(record) == 1 for record in records), "".join(self.seen)
        self.waiting: dict[str, Any] = records[-1][0]
        assert self.waiting["event"] == "lock.waiting", "".join(self.seen)

    def finish(self) -> subprocess.CompletedProcess[str]:
        out, err = self.process.communicate(timeout=120)
        return subprocess.CompletedProcess(self.process.args, self.process.returncode, out,
                                           "".join(self.seen) + err)


def connections_of(url: str, pid: int) -> int:
    """How many PostgreSQL sessions a runner process holds (they carry its pid)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE :name"),
                {"name": f"migrate-runner % {pid}"}))
    finally:
        engine.dispose()


def test_a_waiter_exits_at_head_without_loading_the_app(server_url: str, project: Path) -> None:
    env = fast_env(server_url, project)
    lock = hold_lock(server_url)
    try:
        waiter = Waiter(env, project)
        if server_url.startswith("postgresql"):
            # The test's lock connection is named after this process: so is the holder.
            assert waiter.waiting["holder"]["pid"] == os.getpid()
            # On a server with room, one connection, kept from one poll to the next.
            held = []
            for _ in range(20):
                held.append(connections_of(server_url, waiter.pid))
                time.sleep(0.1)
            assert held == [1] * 20, held
        # What the holder's upgrade leaves behind, committed while it still holds the lock.
        execute(server_url, "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)",
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
    env = fast_env(server_url, project)
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
    fast_env(server_url, project)
    results = start_herd(server_url, cwd=project, extra_env={"FLASK_APP": "counted:create_app()"})
    assert [result.returncode for result in results] == [0] * REPLICAS, [
        result.stderr for result in results if result.returncode]
    logs = [event_names(result.stderr) for result in results]
    assert sum("migrate.applied" in names for names in logs) == 1
    noops = [record for result in results for record in events(result.stderr)
             if record["event"] == "migrate.noop"]
    assert [record["path"] for record in noops] == ["fast"] * (REPLICAS - 1)
    assert imports(project) == 1 + 1  # prepare, then the replica that migrated


def test_sigterm_while_waiting_exits_143(server_url: str, project: Path) -> None:
    env = fast_env(server_url, project)
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
    env = fast_env(server_url, project)
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

"""PostgreSQL: the migration lock lives in a transaction the holder keeps open; that
transaction holds no snapshot and no table lock while the upgrade runs, and it cannot
outlive the runner's hold on it."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from support import (
    event_names,
    finish,
    gated_revision,
    killed_on_failure,
    read_until,
    runner_env,
    start_runner,
    stop,
)

pytestmark = pytest.mark.postgresql


def holder_session(url: str, pid: int) -> tuple[str, object, list[tuple[str, str]]]:
    """The runner `pid`'s lock session: its state, its xmin, and its locks (type, mode)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            (backend, state, xmin), = connection.execute(sa.text(
                "SELECT pid, state, backend_xmin FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name LIKE :name"),
                {"name": f"migrate-runner % {pid}"})
            locks = [tuple(row) for row in connection.execute(sa.text(
                "SELECT locktype, mode FROM pg_locks WHERE pid = :pid AND granted"),
                {"pid": backend})]
        return state, xmin, locks
    finally:
        engine.dispose()


def test_the_holders_transaction_holds_no_snapshot_nor_table_lock(
    postgresql_url: str, project: Path, tmp_path: Path
) -> None:
    gated_revision(project)
    gate = tmp_path / "gate"
    runner = start_runner(["migrate"], runner_env(postgresql_url, RUNNER_TEST_GATE=str(gate)),
                          project)
    with killed_on_failure(runner, gate=gate):
        read_until(runner, "Running upgrade")
        state, xmin, locks = holder_session(postgresql_url, runner.pid)
    gate.touch()
    result = finish(runner)
    assert result.returncode == 0, result.stderr
    assert state == "idle in transaction"
    assert xmin is None  # a CREATE INDEX CONCURRENTLY would otherwise wait for it
    assert {locktype for locktype, _ in locks} == {"advisory", "virtualxid"}, locks
    assert ("advisory", "ExclusiveLock") in locks


def test_a_killed_holder_leaves_no_lock(postgresql_url: str, project: Path, tmp_path: Path
                                        ) -> None:
    gated_revision(project)
    env = runner_env(postgresql_url, RUNNER_TEST_GATE=str(tmp_path / "gate"))
    runner = start_runner(["migrate"], env, project)
    with killed_on_failure(runner, gate=tmp_path / "gate"):
        read_until(runner, "Running upgrade")
    runner.send_signal(signal.SIGKILL)
    runner.communicate(timeout=30)
    (tmp_path / "gate").touch()
    # The next runner takes the lock at once and migrates.
    again = subprocess.run(["timeout", "60", *runner.args], env=env, cwd=project,
                           capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stderr
    assert "migrate.applied" in event_names(again.stderr)
    assert event_names(again.stderr)[:2] == ["db.ready", "lock.acquired"]


def test_sigterm_while_holding_releases_at_once(postgresql_url: str, project: Path,
                                                tmp_path: Path) -> None:
    gated_revision(project)
    runner = start_runner(["migrate"], runner_env(
        postgresql_url, RUNNER_TEST_GATE=str(tmp_path / "gate")), project)
    with killed_on_failure(runner, gate=tmp_path / "gate"):
        read_until(runner, "Running upgrade")
    runner.send_signal(signal.SIGTERM)
    (tmp_path / "gate").touch()  # the revision's next statement is the safe point
    _, err = stop(runner)
    assert runner.returncode == 128 + signal.SIGTERM, err
    engine = sa.create_engine(postgresql_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            # This database's advisory locks: other tests hold theirs beside this one.
            assert connection.scalar(sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database ="
                " (SELECT oid FROM pg_database WHERE datname = current_database())")) == 0
    finally:
        engine.dispose()

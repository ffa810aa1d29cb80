"""SIGTERM during an upgrade: stopped at a safe point, nothing of ours left on the server."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from runner.errors import ExitCode
from support import (
    add_revision,
    event_names,
    events,
    finish,
    killed_on_failure,
    read_until,
    run_runner,
    runner_env,
    start_runner,
    version_rows,
)

STOPPED = 128 + signal.SIGTERM

LONG_SECONDS = 60
"""How long LONG_STATEMENT runs, at least, if nothing stops it."""

STOPPED_WITHIN = LONG_SECONDS / 2
"""A run that exits this soon after SIGTERM stopped the statement rather than waited for it
(an idle machine takes about a second; the margin is for a loaded one)."""

# A statement that runs for a long time on each server, between two DDL statements.
LONG_STATEMENT = {
    "postgresql": f"SELECT pg_sleep({LONG_SECONDS})",
    "mysql": f"SELECT SLEEP({LONG_SECONDS})",
    # SQLite has no sleep(): count to ten billion.
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
              " WHERE x < 10000000000) SELECT count(*) FROM c",
}


def slow_revision(project: Path, statement: str, slug: str = "slow") -> str:
    """A revision that creates a table, runs `statement` (with SLOW_MIGRATION set), then
    creates a second table."""
    return add_revision(
        project, slug,
        f'op.create_table("{slug}_first", sa.Column("id", sa.Integer, primary_key=True))\n'
        'if os.environ.get("SLOW_MIGRATION"):\n'
        f"    op.execute({statement!r})\n"
        f'op.create_table("{slug}_second", sa.Column("id", sa.Integer, primary_key=True))',
        imports="import os",
    )


def start_and_signal(
    project: Path, url: str, revision: str, *args: str, pause: float = 0.5
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Start `migrate`, SIGTERM it once `revision` runs; the result and seconds to exit."""
    process = start_runner(["migrate", *args], runner_env(url, SLOW_MIGRATION="1"), project)
    with killed_on_failure(process):
        seen = read_until(process, f"-> {revision}")
        time.sleep(pause)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        result = finish(process, seen, timeout=60)
        took = time.monotonic() - signalled
    return result, took


def our_statements(url: str) -> list[str]:
    """The statements still running on the server in this test's database, ours or not."""
    parsed = sa.make_url(url)
    engine = sa.create_engine(parsed.set(database="postgres" if parsed.get_backend_name()
                                         == "postgresql" else None), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            if parsed.get_backend_name() == "postgresql":
                query = ("SELECT query FROM pg_stat_activity WHERE datname = :db"
                         " AND pid <> pg_backend_pid()")
            else:
                query = ("SELECT info FROM information_schema.processlist WHERE db = :db"
                         " AND id <> CONNECTION_ID()")
            return [str(row) for row in connection.scalars(sa.text(query),
                                                           {"db": parsed.database})]
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def assert_nothing_left(url: str) -> None:
    if url.startswith("sqlite"):
        return
    # The server ends a dead client's session asynchronously: give it a moment (a loaded
    # machine's moment; still well short of the LONG_SECONDS a statement left running has).
    deadline = time.monotonic() + 15
    while (left := our_statements(url)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []


@pytest.mark.parametrize("kind", [
    pytest.param("postgresql", marks=pytest.mark.postgresql),
    pytest.param("sqlite"),
])
def test_sigterm_mid_revision_cancels_and_rolls_back(
    project: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    url: str = request.getfixturevalue(f"{kind}_url")
    before = run_runner(["migrate"], runner_env(url), project)
    assert before.returncode == 0, before.stderr
    start = version_rows(url)
    slow = slow_revision(project, LONG_STATEMENT[kind])

    result, took = start_and_signal(project, url, slow)

    assert result.returncode == STOPPED, result.stderr
    assert took < STOPPED_WITHIN
    assert "Traceback" not in result.stderr
    stopping = [e for e in events(result.stderr) if e["event"] == "runner.stopping"]
    assert stopping and stopping[0]["action"] == "cancel"
    assert stopping[0]["signal"] == "SIGTERM"
    names = event_names(result.stderr)
    assert names.index("lock.released") < names.index("runner.interrupted")
    assert_nothing_left(url)
    # Rolled back whole: neither table, and the version where the run started.
    assert version_rows(url) == start
    assert not {"slow_first", "slow_second"} & tables(url)

    rerun = run_runner(["migrate"], runner_env(url), project)
    assert rerun.returncode == 0, rerun.stderr
    assert version_rows(url) == [slow]


@pytest.mark.postgresql
def test_sigterm_in_autocommit_block_cancels_the_index_build(
    project: Path, postgresql_url: str
) -> None:
    before = run_runner(["migrate"], runner_env(postgresql_url), project)
    assert before.returncode == 0, before.stderr
    start = version_rows(postgresql_url)
    slow = add_revision(
        project, "concurrent",
        "with op.get_context().autocommit_block():\n"
        '    op.create_index("ix_post_title", "post", ["title"], postgresql_concurrently=True)',
    )
    engine = sa.create_engine(postgresql_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as blocker:
            # A lock on the table keeps CREATE INDEX CONCURRENTLY waiting, as a busy table
            # would; it runs outside Alembic's transaction.
            blocker.execute(sa.text("LOCK TABLE post IN SHARE ROW EXCLUSIVE MODE"))
            result, took = start_and_signal(project, postgresql_url, slow)
            blocker.rollback()
    finally:
        engine.dispose()

    assert result.returncode == STOPPED, result.stderr
    assert took < STOPPED_WITHIN
    assert "Traceback" not in result.stderr
    assert_nothing_left(postgresql_url)
    assert version_rows(postgresql_url) == start
    rerun = run_runner(["migrate"], runner_env(postgresql_url), project)
    assert rerun.returncode == 0, rerun.stderr
    assert version_rows(postgresql_url) == [slow]


@pytest.mark.mysql
def test_sigterm_on_mariadb_finishes_the_revision_then_stops(
    project: Path, mysql_url: str
) -> None:
    slow = slow_revision(project, "SELECT SLEEP(2)")
    after = add_revision(project, "after", 'op.create_table("after_thing",'
                         ' sa.Column("id", sa.Integer, primary_key=True))')

    result, took = start_and_signal(project, mysql_url, slow, pause=0.2)

    assert result.returncode == STOPPED, result.stderr
    assert took < 20
    assert "Traceback" not in result.stderr
    stopping = [e for e in events(result.stderr) if e["event"] == "runner.stopping"]
    assert [e["action"] for e in stopping] == ["finish"]
    assert stopping[0]["revision"] == slow
    assert_nothing_left(mysql_url)
    # The revision in progress completed and was recorded; the next one never started.
    assert version_rows(mysql_url) == [slow]
    assert {"slow_first", "slow_second"} <= tables(mysql_url)
    assert "after_thing" not in tables(mysql_url)

    rerun = run_runner(["migrate"], runner_env(mysql_url), project)
    assert rerun.returncode == 0, rerun.stderr
    assert version_rows(mysql_url) == [after]


@pytest.mark.mysql
def test_sigterm_on_mariadb_past_the_stop_timeout_kills_the_statement(
    project: Path, mysql_url: str
) -> None:
    slow = slow_revision(project, LONG_STATEMENT["mysql"])

    result, took = start_and_signal(project, mysql_url, slow, "--stop-timeout", "1")

    assert result.returncode == STOPPED, result.stderr
    assert took < STOPPED_WITHIN
    assert "Traceback" not in result.stderr
    actions = [e["action"] for e in events(result.stderr) if e["event"] == "runner.stopping"]
    assert actions == ["finish", "kill"]
    stopped = [e for e in events(result.stderr) if e["event"] == "runner.interrupted"]
    assert slow in stopped[0]["message"] and "half-applied" in stopped[0]["message"]
    assert_nothing_left(mysql_url)
    # The documented MySQL case: the first table exists, the revision is not recorded.
    assert version_rows(mysql_url) != [slow]
    assert "slow_first" in tables(mysql_url)

    # The next run names the leftovers and how to repair them.
    rerun = run_runner(["migrate"], runner_env(mysql_url), project)
    assert rerun.returncode == ExitCode.MIGRATION_FAILED
    failed = [e for e in events(rerun.stderr) if e["event"] == "migrate.failed"]
    assert "interrupted" in failed[0]["message"] and "flask db stamp" in failed[0]["message"]

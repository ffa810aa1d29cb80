"""`migrate.progress` from a real runner: who blocks a revision, how far an index build or a
table copy has got, read on the connections the runner already holds."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from support import (
    INNODB_TRX,
    add_revision,
    events,
    execute,
    finish,
    hold_table,
    killed_on_failure,
    read_until,
    run_runner,
    runner_env,
    start_runner,
)

FAST = {"RUNNER_PROGRESS_INTERVAL": "0.3"}


def progress_events(lines: list[str]) -> list[dict[str, Any]]:
    return [record for record in events("".join(lines)) if record["event"] == "migrate.progress"]


def sessions_besides(url: str, others: int) -> int:
    """How many client sessions the test's database has now, besides this one and the session
    `others` (the test's blocker, or 0): the runner's, while it migrates. Not the server's
    background processes; not other databases' sessions (other tests run beside this one)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            if url.startswith("postgresql"):
                return int(connection.scalar(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND backend_type = 'client backend'"
                    " AND pid NOT IN (pg_backend_pid(), :other)"), {"other": others}))
            return int(connection.scalar(sa.text(
                "SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE()"
                " AND ID NOT IN (CONNECTION_ID(), :other)"), {"other": others}))
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", [pytest.param("postgresql", marks=pytest.mark.postgresql),
                                  pytest.param("mysql", marks=[pytest.mark.mysql, INNODB_TRX])])
def test_a_blocked_revision_names_its_blocker(project: Path, kind: str,
                                              request: pytest.FixtureRequest) -> None:
    url: str = request.getfixturevalue(f"{kind}_url")
    assert run_runner(["migrate"], runner_env(url), cwd=project).returncode == 0
    revision = add_revision(project, "alter",
                            'op.add_column("user", sa.Column("nick", sa.String(20)))')
    env = runner_env(url, RUNNER_DDL_LOCK_TIMEOUT="0", **FAST)
    with hold_table(url) as blocker:
        runner = start_runner(["migrate"], env, cwd=project)
        with killed_on_failure(runner):
            seen = read_until(runner, '"migrate.progress"')
            seen += read_until(runner, '"migrate.progress"')
            sessions = sessions_besides(url, blocker)
    result = finish(runner, seen)
    assert result.returncode == 0, result.stderr
    readings = progress_events(seen)
    last = readings[-1]
    assert last["revision"] == revision
    assert "ALTER TABLE" in last["statement"]
    assert blocker in [entry["pid"] for entry in last["blockers"]], last
    # The lock's connection and the upgrade's (and MySQL's holder beacon): nothing more.
    assert sessions <= (2 if kind == "postgresql" else 3), sessions


@pytest.mark.postgresql
def test_an_index_built_concurrently_shows_a_rising_percent(project: Path, postgresql_url: str
                                                            ) -> None:
    assert run_runner(["migrate"], runner_env(postgresql_url), cwd=project).returncode == 0
    execute(postgresql_url, "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS body"
            " FROM generate_series(1, 1500000) AS g")
    add_revision(project, "concurrent", "with op.get_context().autocommit_block():\n"
                 '    op.create_index("ix_big_body", "big", ["body"],'
                 " postgresql_concurrently=True)")
    result = run_runner(["migrate"], runner_env(postgresql_url, **FAST), cwd=project,
                        timeout=600)
    assert result.returncode == 0, result.stderr
    percents = [record["percent"] for record in events(result.stderr)
                if record["event"] == "migrate.progress" and record.get("percent") is not None]
    assert len(percents) >= 2, result.stderr
    assert any(later > earlier for earlier, later in itertools.pairwise(percents))
    texts = [record["message"] for record in events(result.stderr)
             if record["event"] == "migrate.progress"]
    assert any("%" in text and "ix_big_body" in text for text in texts), texts


@pytest.mark.mysql
@INNODB_TRX
def test_a_copying_alter_shows_its_stage_progress(project: Path, mysql_url: str) -> None:
    assert run_runner(["migrate"], runner_env(mysql_url), cwd=project).returncode == 0
    execute(mysql_url, "CREATE TABLE big (id INT PRIMARY KEY, n INT, body VARCHAR(40))",
            "INSERT INTO big SELECT seq, seq, REPEAT('x', 30) FROM seq_1_to_1000000")
    add_revision(project, "copy",
                 'op.execute("ALTER TABLE big MODIFY n BIGINT, ALGORITHM=COPY")')
    runner = start_runner(["migrate"], runner_env(mysql_url, **FAST), cwd=project)
    with killed_on_failure(runner):
        seen = read_until(runner, "stage 1 of 2")
        sessions = sessions_besides(mysql_url, 0)
        result = finish(runner, seen, timeout=600)
    assert result.returncode == 0, result.stderr
    staged = [record for record in progress_events(seen) if record.get("phase")]
    assert staged and "stage" in staged[-1]["phase"], seen
    assert sessions <= 3, sessions


@pytest.mark.postgresql
def test_the_termination_message_of_a_stopped_run_has_the_last_reading(
    project: Path, postgresql_url: str, tmp_path: Path
) -> None:
    assert run_runner(["migrate"], runner_env(postgresql_url), cwd=project).returncode == 0
    add_revision(project, "alter", 'op.add_column("user", sa.Column("nick", sa.String(20)))')
    log = tmp_path / "termination-log"
    # The budget runs from the start: 8 s leaves a loaded machine room to load the app and
    # still make readings in more than one 1 s wait for the table.
    env = runner_env(postgresql_url, RUNNER_DDL_LOCK_TIMEOUT="1", RUNNER_LOCK_TIMEOUT="8",
                     RUNNER_TERMINATION_LOG=str(log), RUNNER_PROGRESS_INTERVAL="0.3")
    with hold_table(postgresql_url):
        result = run_runner(["migrate"], env, cwd=project)
    assert result.returncode == 4, result.stderr
    summary = json.loads(log.read_text())
    assert "last progress:" in summary["message"]

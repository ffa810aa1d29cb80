"""The safety check in the pipeline: `runner lint`'s exit codes, and the gate before an
upgrade (RUNNER_LINT): warn logs each finding and applies, block refuses (exit 8) with
nothing applied, off says nothing. On the real servers, against a populated table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from runner.errors import ExitCode
from support import (
    KINDS,
    DatabaseFactory,
    add_revision,
    event_names,
    events,
    execute,
    one_error,
    prepare,
    run_runner,
    runner_env,
    version_rows,
)

DANGEROUS = ('op.create_index("ix_post_title", "post", ["title"])\n'
             'op.alter_column("post", "title", type_=sa.String(40))')
"""A blocking index build (PostgreSQL), and a narrowing type change (both: a rewrite/copy)."""


LARGE = {"RUNNER_LINT_LARGE_TABLE_ROWS": "100"}
"""A small threshold for a "large table", so that a few hundred rows are one."""

POSTS = 300
"""Rows in "post": a large table under LARGE."""


def lint_env(url: str, **extra: str) -> dict[str, str]:
    """runner_env with LARGE: POSTS rows make every locking finding an error."""
    return runner_env(url, **LARGE, **extra)


def populated(project: Path, url: str, kind: str) -> str:
    """The project at head on `url` with POSTS posts, then a dangerous revision pending."""
    assert run_runner(["migrate"], runner_env(url), cwd=project).returncode == 0
    series = (f"generate_series(1, {POSTS}) AS n" if kind == "postgresql" else
              f"(SELECT seq AS n FROM seq_1_to_{POSTS}) AS s")
    concat = "'t' || n" if kind == "postgresql" else "CONCAT('t', n)"
    slug = "'s' || n" if kind == "postgresql" else "CONCAT('s', n)"
    # Autovacuum off: the row estimate stays the one of the ANALYZE below.
    execute(url, *(["ALTER TABLE post SET (autovacuum_enabled = false)"]
                   if kind == "postgresql" else []),
            f"INSERT INTO post (title, slug) SELECT {concat}, {slug} FROM {series}",
            "ANALYZE post" if kind == "postgresql" else "ANALYZE TABLE post")
    return add_revision(project, "dangerous", DANGEROUS)


@pytest.mark.parametrize("kind", KINDS)
def test_block_refuses_with_exit_8_and_applies_nothing(
    project: Path, new_database: DatabaseFactory, kind: str
) -> None:
    url = new_database(kind)
    revision = populated(project, url, kind)
    before = version_rows(url)
    result = run_runner(["migrate", "--lint", "block"], lint_env(url), cwd=project)
    error = one_error(result, ExitCode.UNSAFE_MIGRATION)
    assert error["event"] == "lint.refused"
    assert error["revision"] == revision
    assert error["rule"] == "changing-column-type" or kind == "postgresql"
    assert version_rows(url) == before
    names = event_names(result.stderr)
    assert "lint.finding" in names
    assert names.index("lock.released") < names.index("lint.refused")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        indexes = {index["name"] for index in sa.inspect(engine).get_indexes("post")}
    finally:
        engine.dispose()
    assert "ix_post_title" not in indexes


@pytest.mark.parametrize("kind", KINDS)
def test_warn_logs_each_finding_and_applies(
    project: Path, new_database: DatabaseFactory, kind: str
) -> None:
    url = new_database(kind)
    revision = populated(project, url, kind)
    result = run_runner(["migrate"], lint_env(url), cwd=project)
    assert result.returncode == 0, result.stderr
    findings = [record for record in events(result.stderr) if record["event"] == "lint.finding"]
    assert {finding["rule"] for finding in findings} >= {"changing-column-type"}
    assert all(finding["revision"] == revision and finding["rows"] for finding in findings)
    names = event_names(result.stderr)
    assert names.index("lint.finding") < names.index("migrate.applied")
    assert version_rows(url) == [revision]


@pytest.mark.postgresql
def test_off_says_nothing_and_a_noop_never_lints(project: Path, postgresql_url: str) -> None:
    revision = populated(project, postgresql_url, "postgresql")
    env = lint_env(postgresql_url, RUNNER_LINT="off")
    result = run_runner(["migrate"], env, cwd=project)
    assert result.returncode == 0, result.stderr
    assert "lint.finding" not in event_names(result.stderr)
    assert version_rows(postgresql_url) == [revision]
    prepare(project, env)
    traced = run_runner(["migrate"], lint_env(postgresql_url, RUNNER_LINT="block"),
                        cwd=project)
    assert event_names(traced.stderr) == ["db.ready", "migrate.noop"]


@pytest.mark.postgresql
def test_runner_lint_exits_8_then_0_once_acknowledged(project: Path, postgresql_url: str
                                                       ) -> None:
    revision = populated(project, postgresql_url, "postgresql")
    env = lint_env(postgresql_url)
    result = run_runner(["lint", "--format", "json"], env, cwd=project)
    assert result.returncode == ExitCode.UNSAFE_MIGRATION, result.stderr
    report = json.loads(result.stdout)
    assert report["database"]["connected"] is True
    rules = {finding["rule"] for finding in report["findings"]}
    assert rules == {"require-concurrent-index-creation", "changing-column-type"}
    (path,) = (project / "migrations" / "versions").glob(f"{revision}_*.py")
    path.write_text(path.read_text().replace(
        "def upgrade():",
        "def upgrade():\n    # runner: allow require-concurrent-index-creation -- a quiet hour"))
    allowed = run_runner(["lint", "--format", "json"],
                         {**env, "RUNNER_LINT_ALLOW": "changing-column-type"}, cwd=project)
    assert allowed.returncode == 0, allowed.stdout
    assert {finding["severity"] for finding in json.loads(allowed.stdout)["findings"]} == {
        "allowed"}
    github = run_runner(["lint", "--format", "github"], env, cwd=project)
    assert "::error file=" in github.stdout and "::notice file=" in github.stdout
    offline = run_runner(["lint", "--offline", "--from", "06dac530478c"],
                         runner_env("postgresql+psycopg://u:pw@db.invalid/x"), cwd=project)
    assert offline.returncode == ExitCode.UNSAFE_MIGRATION, offline.stderr


def test_lint_usage_errors_exit_2(project: Path, sqlite_url: str) -> None:
    result = run_runner(["lint", "--format", "yaml"], runner_env(sqlite_url), cwd=project)
    one_error(result, ExitCode.CONFIG)
    result = run_runner(["lint"], runner_env(sqlite_url, RUNNER_LINT_ALLOW="no-such-rule"),
                        cwd=project)
    assert "no-such-rule" in one_error(result, ExitCode.CONFIG)["message"]

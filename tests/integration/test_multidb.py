"""Two databases (`flask db init --multidb`, SQLALCHEMY_BINDS): migrated together, each reported."""

from __future__ import annotations

import json

import pytest

from runner.errors import ExitCode
from support import (
    EXAMPLE,
    KINDS,
    REPLICAS,
    DatabaseFactory,
    event_names,
    run_runner,
    runner_env,
    script_heads,
    start_herd,
)

MULTIDB_HEADS = script_heads(EXAMPLE / "migrations_multidb")


@pytest.mark.parametrize("kind", KINDS)
def test_both_databases_migrate_and_report(new_database: DatabaseFactory, kind: str) -> None:
    default, audit = new_database(kind), new_database(kind)
    env = runner_env(default, EXAMPLE_SECOND_DATABASE_URL=audit)

    assert run_runner(["check"], env).returncode == ExitCode.NOT_AT_HEAD
    before = json.loads(run_runner(["status", "--json"], env).stdout)
    assert [db["current"] for db in before["databases"]] == [[], []]
    assert len(before["pending"]) == 4

    results = start_herd(default, extra_env={"EXAMPLE_SECOND_DATABASE_URL": audit})
    logs = [event_names(result.stderr) for result in results]
    assert [result.returncode for result in results] == [0] * REPLICAS
    assert sum("migrate.applied" in names for names in logs) == 1

    assert run_runner(["check"], env).returncode == 0
    after = json.loads(run_runner(["status", "--json"], env).stdout)
    assert [db["current"] for db in after["databases"]] == [MULTIDB_HEADS, MULTIDB_HEADS]
    assert after["pending"] == []
    names = [db["name"] for db in after["databases"]]
    assert default.rsplit("/", 1)[-1] in names[0]
    assert audit.rsplit("/", 1)[-1] in names[1]


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_sql_renders_each_database(kind: str) -> None:
    closed = {"postgresql": "postgresql+psycopg://u:p@127.0.0.1:9/",
              "mysql": "mysql+pymysql://u:p@127.0.0.1:9/"}[kind]
    env = runner_env(closed + "app", EXAMPLE_SECOND_DATABASE_URL=closed + "audit")
    result = run_runner(["sql"], env)
    assert result.returncode == 0, result.stderr
    default, audit = result.stdout.split("-- database: audit")
    assert default.startswith("-- database: (default)")
    assert "CREATE TABLE post" in default
    assert "audit_event" not in default
    assert "CREATE TABLE audit_event" in audit
    assert "CREATE TABLE post" not in audit

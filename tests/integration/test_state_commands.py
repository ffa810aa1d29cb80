"""status, check, sql and serve: the migration state known without guessing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from runner.errors import ExitCode
from support import (
    EXAMPLE,
    add_revision,
    event_names,
    events,
    free_port,
    get,
    one_error,
    read_until,
    run_runner,
    runner_env,
    script_heads,
    scripts,
    start_runner,
    stop,
)

EXAMPLE_TABLES = ("user", "more_user_info", "post")
CLOSED_PORT = {"postgresql": "postgresql+psycopg://app:pw@127.0.0.1:9/app",
               "mysql": "mysql+pymysql://app:pw@127.0.0.1:9/app"}


def all_revisions() -> list[str]:
    """The example's revisions, oldest first, as Alembic orders them."""
    return [script.revision for script in scripts().walk_revisions()][::-1]


def test_empty_database_then_migrated(database_url: str) -> None:
    env = runner_env(database_url)
    assert run_runner(["check"], env).returncode == ExitCode.NOT_AT_HEAD
    before = run_runner(["status", "--json"], env)
    assert before.returncode == 0, before.stderr
    status = json.loads(before.stdout)
    assert status["current"] == []
    assert status["heads"] == script_heads()
    assert status["pending"] == all_revisions()

    assert run_runner(["migrate"], env).returncode == 0
    assert run_runner(["check"], env).returncode == 0
    after = json.loads(run_runner(["status", "--json"], env).stdout)
    assert after == {**after, "current": script_heads(), "pending": []}


def test_status_text_reads_like_flask_db_history(database_url: str) -> None:
    result = run_runner(["status"], runner_env(database_url))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith(": base (empty)")
    assert f"pending ({len(all_revisions())}, in the order they apply):" in lines
    assert lines[-1].strip().endswith("(head), posts with slug")


@pytest.mark.parametrize("dialect", ["postgresql", "mysql"])
def test_sql_renders_every_table_without_a_server(dialect: str) -> None:
    result = run_runner(["sql"], runner_env(CLOSED_PORT[dialect]))
    assert result.returncode == 0, result.stderr
    for table in EXAMPLE_TABLES:
        assert f"CREATE TABLE {table} (" in result.stdout or f'CREATE TABLE "{table}" (' in (
            result.stdout
        ), table
    assert "CREATE TABLE alembic_version" in result.stdout
    assert "INSERT INTO alembic_version" in result.stdout
    assert "db.ready" not in event_names(result.stderr)


def test_sql_from_prints_only_what_follows() -> None:
    first = all_revisions()[0]
    result = run_runner(["sql", "--from", first], runner_env(CLOSED_PORT["postgresql"]))
    assert result.returncode == 0, result.stderr
    assert "CREATE TABLE post" in result.stdout
    assert "CREATE TABLE more_user_info" in result.stdout
    assert 'CREATE TABLE "user"' not in result.stdout
    assert f"-> {first}" not in result.stdout
    assert "CREATE TABLE alembic_version" not in result.stdout
    upto = run_runner(["sql", "--to", first], runner_env(CLOSED_PORT["postgresql"]))
    assert 'CREATE TABLE "user"' in upto.stdout
    assert "CREATE TABLE post" not in upto.stdout


def test_sql_with_unknown_revision_exits_2() -> None:
    result = run_runner(["sql", "--from", "abcdef999"], runner_env(CLOSED_PORT["postgresql"]))
    assert result.returncode == ExitCode.CONFIG
    assert "--from abcdef999" in result.stderr


def test_sql_that_needs_reflection_exits_2(project: Path) -> None:
    add_revision(project, "batch", 'with op.batch_alter_table("post") as batch_op:\n'
                 '    batch_op.drop_column("content")')
    result = run_runner(["sql"], runner_env("sqlite:////nonexistent/dir/app.db"), cwd=project)
    assert result.returncode == ExitCode.CONFIG
    assert result.stdout == ""
    assert "cannot be rendered as offline SQL" in result.stderr
    assert "Traceback" not in result.stderr


# exit 6 on every command that needs the history

HISTORY_COMMANDS = [["migrate"], ["check"], ["status"], ["status", "--json"],
                    ["serve", "--wait-for-head"], ["run"]]


def make_two_heads(project: Path) -> str:
    versions = project / "migrations" / "versions"
    first = all_revisions()[0]
    (versions / "bbbb1111side_branch.py").write_text(
        f'revision = "bbbb1111side"\ndown_revision = "{first}"\nbranch_labels = None\n'
        "depends_on = None\n\ndef upgrade():\n    pass\n\ndef downgrade():\n    pass\n"
    )
    return "bbbb1111side"


@pytest.mark.parametrize("command", [*HISTORY_COMMANDS, ["sql"]], ids=" ".join)
def test_two_heads_exit_6_everywhere(project: Path, sqlite_url: str, command: list[str]) -> None:
    side = make_two_heads(project)
    result = run_runner(command, runner_env(sqlite_url, PORT="1"), cwd=project)
    message = str(one_error(result, ExitCode.REVISIONS_UNUSABLE)["message"])
    assert side in message
    assert script_heads(EXAMPLE / "migrations")[0] in message
    assert "flask db merge" in message


def stamp_unknown(url: str, revision: str = "0ddba11c0ffee") -> str:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
        connection.execute(sa.text(f"INSERT INTO alembic_version VALUES ('{revision}')"))
    engine.dispose()
    return revision


@pytest.mark.parametrize("command", HISTORY_COMMANDS, ids=" ".join)
def test_unknown_database_revision_exits_6_everywhere(
    database_url: str, command: list[str]
) -> None:
    revision = stamp_unknown(database_url)
    result = run_runner(command, runner_env(database_url, PORT="1"))
    message = str(one_error(result, ExitCode.REVISIONS_UNUSABLE)["message"])
    assert revision in message
    assert "older than the database" in message


def test_allow_newer_database_lets_an_older_image_run(sqlite_url: str) -> None:
    revision = stamp_unknown(sqlite_url)
    env = runner_env(sqlite_url, RUNNER_ALLOW_NEWER_DATABASE="true")
    migrate = run_runner(["migrate"], env)
    assert migrate.returncode == 0, migrate.stderr
    # Without a manifest only the app can tell, and it is loaded under the lock.
    assert event_names(migrate.stderr) == ["db.ready", "lock.acquired", "revisions.newer",
                                           "lock.released", "migrate.noop"]
    assert run_runner(["check"], env).returncode == 0
    status = json.loads(run_runner(["status", "--json"], env).stdout)
    assert status["databases"][0]["ahead"] == [revision]
    assert status["pending"] == []


def test_serve_waits_for_head_then_serves(sqlite_url: str) -> None:
    port = free_port()
    env = runner_env(sqlite_url, PORT=str(port))
    server = start_runner(["serve", "--wait-for-head", "--wait-timeout", "120"], env)
    try:
        read_until(server, '"serve.waiting"')
        assert server.poll() is None
        assert run_runner(["migrate"], env).returncode == 0
        status, _ = get(f"http://127.0.0.1:{port}/", time.monotonic() + 60)
        assert status == 200
    finally:
        stop(server)
    assert server.returncode == 0


def test_serve_without_head_times_out_with_5(sqlite_url: str) -> None:
    result = run_runner(["serve", "--wait-for-head", "--wait-timeout", "1"],
                        runner_env(sqlite_url))
    assert result.returncode == ExitCode.NOT_AT_HEAD
    assert [e["event"] for e in events(result.stderr)][-1] == "check.behind"


def test_plain_serve_never_migrates(sqlite_url: str) -> None:
    port = free_port()
    server = start_runner(["serve"], runner_env(sqlite_url, PORT=str(port)))
    try:
        assert get(f"http://127.0.0.1:{port}/healthz", time.monotonic() + 60)[0] == 200
    finally:
        _, err = stop(server)
    names = event_names("\n".join(x for x in err.splitlines() if x.startswith("{")))
    # Nothing before the exec; after it, gunicorn's own lines (the default gunicorn config).
    assert names[: names.index("serve.exec") + 1] == ["serve.exec"]
    assert not [name for name in names if name.startswith(("migrate.", "lock."))], names
    assert run_runner(["check"], runner_env(sqlite_url)).returncode == ExitCode.NOT_AT_HEAD

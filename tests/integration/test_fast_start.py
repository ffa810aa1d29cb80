"""The fast no-op path in the CLI: at head, `migrate` and `check` never load the app; on any
doubt they take the full path, which decides exactly as before."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from runner.errors import ExitCode
from support import (
    EXAMPLE,
    UNIMPORTABLE_APP,
    add_revision,
    events,
    execute,
    one_error,
    run_runner,
    runner_env,
    script_heads,
)

HEAD = script_heads()[0]


def fast_env(url: str | None, **extra: str) -> dict[str, str]:
    """The example's environment with the migrations directory given: the fast path's inputs."""
    return runner_env(url, RUNNER_MIGRATIONS_DIR="migrations", **extra)


def migrate(url: str | None, project: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return run_runner(["migrate"], fast_env(url, **extra), cwd=project)


def noop(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The migrate.noop event of a successful `migrate`."""
    assert result.returncode == ExitCode.OK, result.stderr
    (record,) = [r for r in events(result.stderr) if r["event"] == "migrate.noop"]
    return record


def test_at_head_migrate_and_check_never_load_the_app(database_url: str, project: Path) -> None:
    first = migrate(database_url, project)
    assert first.returncode == ExitCode.OK, first.stderr
    assert [r["event"] for r in events(first.stderr)][-1] == "migrate.applied"
    # From now on FLASK_APP names a module that raises when imported.
    (project / "unimportable.py").write_text(UNIMPORTABLE_APP)
    env = fast_env(database_url, FLASK_APP="unimportable:create_app()")

    result = run_runner(["migrate"], env, cwd=project)
    assert [r["event"] for r in events(result.stderr)] == ["db.ready", "migrate.noop"]
    record = noop(result)
    assert record["path"] == "fast"
    assert record["heads"] == [HEAD]

    check = run_runner(["check"], env, cwd=project)
    assert check.returncode == ExitCode.OK, check.stderr
    assert check.stdout == f"at head: {HEAD}\n"

    # The full path loads the app: the same command without the directory fails on it.
    del env["RUNNER_MIGRATIONS_DIR"]
    assert "the app was imported" in one_error(
        run_runner(["check"], env, cwd=project), ExitCode.CONFIG)["message"]


def test_at_head_neither_flask_nor_sqlalchemy_nor_alembic_is_imported(sqlite_url: str) -> None:
    assert migrate(sqlite_url, EXAMPLE).returncode == ExitCode.OK
    for command in ("migrate", "check"):
        result = subprocess.run([sys.executable, "-X", "importtime", "-m", "runner", command],
                                env=fast_env(sqlite_url), cwd=EXAMPLE, capture_output=True,
                                text=True, timeout=120, check=False)
        assert result.returncode == ExitCode.OK, result.stderr
        imported = {match.group(1).split(".")[0] for match in re.finditer(
            r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", result.stderr, re.M)}
        assert "runner" in imported  # the listing is there...
        assert not imported & {"flask", "sqlalchemy", "alembic", "flask_migrate"}, command


def test_not_at_head_migrates_on_the_full_path(database_url: str, project: Path) -> None:
    assert migrate(database_url, project).returncode == ExitCode.OK
    revision = add_revision(project, "later", "pass")
    check = run_runner(["check"], fast_env(database_url), cwd=project)
    assert one_error(check, ExitCode.NOT_AT_HEAD)["pending"] == [revision]
    result = migrate(database_url, project)
    assert result.returncode == ExitCode.OK, result.stderr
    applied = [r for r in events(result.stderr) if r["event"] == "migrate.applied"]
    assert applied[0]["revisions"] == [revision]
    assert noop(migrate(database_url, project))["path"] == "fast"


def test_an_unknown_revision_in_the_database_exits_6(database_url: str, project: Path) -> None:
    assert migrate(database_url, project).returncode == ExitCode.OK
    execute(database_url, "UPDATE alembic_version SET version_num = 'f00dfeedbeef'")
    for command in ("migrate", "check"):
        error = one_error(run_runner([command], fast_env(database_url), cwd=project),
                          ExitCode.REVISIONS_UNUSABLE)
        assert error["revisions"] == ["f00dfeedbeef"]
    allowed = migrate(database_url, project, RUNNER_ALLOW_NEWER_DATABASE="true")
    assert noop(allowed)["path"] == "full"


def test_several_heads_exit_6(sqlite_url: str, project: Path) -> None:
    assert migrate(sqlite_url, project).returncode == ExitCode.OK
    versions = project / "migrations" / "versions"
    (source,) = versions.glob(f"{HEAD}_*.py")
    (versions / "b0b0b0b0b0b0_branch.py").write_text(
        source.read_text().replace(f"revision = '{HEAD}'", "revision = 'b0b0b0b0b0b0'"))
    for command in ("migrate", "check"):
        error = one_error(run_runner([command], fast_env(sqlite_url), cwd=project),
                          ExitCode.REVISIONS_UNUSABLE)
        assert "2 heads" in error["message"]


def test_the_directory_known_only_to_the_app_takes_the_full_path(sqlite_url: str) -> None:
    env = runner_env(sqlite_url)
    assert run_runner(["migrate"], env).returncode == ExitCode.OK
    assert noop(run_runner(["migrate"], env))["path"] == "full"


def test_a_url_known_only_to_the_app_takes_the_full_path(project: Path) -> None:
    # No DATABASE_URL: the example app uses a SQLite file in its instance folder.
    assert migrate(None, project).returncode == ExitCode.OK
    assert noop(migrate(None, project))["path"] == "full"
    assert (project / "instance" / "example.db").is_file()


def test_two_databases_take_the_full_path(postgresql_url: str, sqlite_url: str) -> None:
    extra = {"EXAMPLE_SECOND_DATABASE_URL": sqlite_url,
             "RUNNER_MIGRATIONS_DIR": "migrations_multidb"}
    env = runner_env(postgresql_url, **extra)
    assert run_runner(["migrate"], env).returncode == ExitCode.OK
    assert noop(run_runner(["migrate"], env))["path"] == "full"


def test_a_version_table_given_to_migrate_takes_the_full_path(
    sqlite_url: str, project: Path
) -> None:
    app = project / "app.py"
    app.write_text(app.read_text().replace(
        "render_as_batch=True", "render_as_batch=True, version_table='deploy_version'"))
    assert migrate(sqlite_url, project).returncode == ExitCode.OK
    revision = add_revision(project, "later", "pass")
    # Not the app's version table, yet at the scripts' head: the fast path must not read it.
    execute(sqlite_url, "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)",
            f"INSERT INTO alembic_version VALUES ('{revision}')")
    result = migrate(sqlite_url, project)
    applied = [r for r in events(result.stderr) if r["event"] == "migrate.applied"]
    assert applied and applied[0]["revisions"] == [revision], result.stderr
    assert noop(migrate(sqlite_url, project))["path"] == "full"


def test_a_flaskenv_is_read_as_flask_reads_it(sqlite_url: str, project: Path) -> None:
    assert migrate(sqlite_url, project).returncode == ExitCode.OK
    # The app and the URL come from .flaskenv, as a `flask` user writes them.
    (project / "unimportable.py").write_text(UNIMPORTABLE_APP)
    (project / ".flaskenv").write_text(f"FLASK_APP=unimportable:create_app()\n"
                                       f"DATABASE_URL={sqlite_url}\n")
    env = fast_env(None)
    del env["FLASK_APP"]
    result = run_runner(["migrate"], env, cwd=project)
    assert noop(result)["path"] == "fast"
    # A value that refers to another variable is left to flask: the full path loads the app.
    (project / ".flaskenv").write_text("FLASK_APP=${APP_MODULE}:create_app()\n"
                                       f"DATABASE_URL={sqlite_url}\n")
    result = run_runner(["migrate"], {**env, "APP_MODULE": "unimportable"}, cwd=project)
    assert "the app was imported" in one_error(result, ExitCode.CONFIG)["message"]


def test_a_database_not_up_is_waited_for_cheaply_then_given_up(project: Path) -> None:
    (project / "unimportable.py").write_text(UNIMPORTABLE_APP)
    env = fast_env("postgresql+psycopg://app:pw@127.0.0.1:9/app",
                   FLASK_APP="unimportable:create_app()", RUNNER_WAIT_TIMEOUT="2")
    started = time.monotonic()
    for command in ("migrate", "check"):
        result = run_runner([command], env, cwd=project)
        error = one_error(result, ExitCode.DATABASE_UNAVAILABLE)
        assert "within 2s" in error["message"]
        assert "pw" not in result.stderr
        assert "db.waiting" in [r["event"] for r in events(result.stderr)]
    assert time.monotonic() - started < 60  # did not wait twice the deadline, nor hang
    traced = subprocess.run([sys.executable, "-X", "importtime", "-m", "runner", "migrate"],
                            env=env, cwd=project, capture_output=True, text=True, timeout=60,
                            check=False)
    assert traced.returncode == ExitCode.DATABASE_UNAVAILABLE
    assert "| sqlalchemy" not in traced.stderr  # the bare driver waited


def test_refused_credentials_take_the_full_path(postgresql_url: str, project: Path) -> None:
    url = sa.engine.make_url(postgresql_url).set(username="nobody_here", password="s3cret")
    result = migrate(url.render_as_string(hide_password=False), project)
    error = one_error(result, ExitCode.DATABASE_UNAVAILABLE)
    assert "refused the connection" in error["message"]
    assert "s3cret" not in result.stderr

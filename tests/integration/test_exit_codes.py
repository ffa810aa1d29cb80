"""Every documented exit code, provoked for real against real servers and processes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from runner.errors import ExitCode
from support import (
    add_revision,
    counted_env,
    event_names,
    events,
    finish,
    hold_lock,
    imports,
    one_error,
    prepare,
    read_until,
    records,
    run_runner,
    runner_env,
    start_runner,
    version_rows,
)

PASSWORD = "Sup3r-s3cret-pw"


# exit 2: usage and configuration


@pytest.mark.parametrize(
    ("args", "env_changes", "names"),
    [
        (["migrate"], {"DATABASE_URL": "not a url"}, "DATABASE_URL"),
        (["migrate"], {"DATABASE_URL": "nosuchdb://u:pw@host/db"}, "DATABASE_URL"),
        (["migrate"], {"FLASK_APP": "no_such_module:app"}, "FLASK_APP"),
        (["migrate", "--wait-timeout", "soon"], {}, "--wait-timeout"),
        (["migrate"], {"RUNNER_LOCK_TIMEOUT": "ten"}, "RUNNER_LOCK_TIMEOUT"),
        (["migrate", "--directory", "nowhere"], {}, "--directory"),
        (["migrate"], {"DATABASE_URL": "", "DATABASE_URL_FILE": "/absent"}, "DATABASE_URL_FILE"),
        (["migrate"], {"DATABASE_URL_FILE": "/absent"}, "both DATABASE_URL and DATABASE_URL_FILE"),
        (["frobnicate"], {}, "invalid choice"),
        (["migrate", "--", "--workers", "2"], {}, "gunicorn"),
    ],
)
def test_configuration_errors_exit_2(
    sqlite_url: str, args: list[str], env_changes: dict[str, str], names: str
) -> None:
    env = runner_env(sqlite_url)
    env.update(env_changes)
    for key in [key for key, value in env.items() if value == ""]:
        del env[key]
    result = run_runner(args, env)
    error = one_error(result, ExitCode.CONFIG)
    assert names in str(error["message"])


def test_bad_log_format_exits_2_in_text(sqlite_url: str) -> None:
    result = run_runner(["migrate"], runner_env(sqlite_url, RUNNER_LOG_FORMAT="xml"))
    assert result.returncode == ExitCode.CONFIG
    assert result.stderr.count("\n") == 1
    assert "config.invalid: RUNNER_LOG_FORMAT must be 'text' or 'json'" in result.stderr


def test_app_that_fails_to_import_exits_2(tmp_path: Path, sqlite_url: str) -> None:
    (tmp_path / "broken_app.py").write_text("import flask\n1 / 0\n")
    result = run_runner(["migrate"], runner_env(sqlite_url, FLASK_APP="broken_app"), cwd=tmp_path)
    error = one_error(result, ExitCode.CONFIG)
    assert "ZeroDivisionError" in str(error["message"])
    assert "FLASK_APP" in str(error["message"])


def test_missing_migrations_directory_exits_2(project: Path, sqlite_url: str) -> None:
    (project / "migrations" / "env.py").unlink()
    result = run_runner(["migrate"], runner_env(sqlite_url), cwd=project)
    assert "RUNNER_MIGRATIONS_DIR" in str(one_error(result, ExitCode.CONFIG)["message"])


def test_url_in_database_url_file_is_used(tmp_path: Path, sqlite_url: str) -> None:
    secret = tmp_path / "database_url"
    secret.write_text(sqlite_url + "\n")
    env = runner_env(DATABASE_URL_FILE=str(secret))
    result = run_runner(["migrate"], env)
    assert result.returncode == 0, result.stderr
    assert "migrate.applied" in event_names(result.stderr)
    assert version_rows(sqlite_url)


# exit 3: database unavailable


def test_unreachable_port_exits_3_after_waiting() -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:9/nothing"
    result = run_runner(["wait", "--wait-timeout", "1.5"], runner_env(url))
    error = one_error(result, ExitCode.DATABASE_UNAVAILABLE)
    assert error["event"] == "db.unavailable"
    assert "RUNNER_WAIT_TIMEOUT" in str(error["message"])
    waits = [record for record in events(result.stderr) if record["event"] == "db.waiting"]
    assert len(waits) >= 2
    assert all(0 < float(str(record["delay"])) <= 1.2 for record in waits)


@pytest.mark.mysql
def test_refused_credentials_on_mariadb_exit_3_without_retrying(mysql_url: str) -> None:
    url = sa.make_url(mysql_url).set(username="nobody_here", password=PASSWORD)
    result = run_runner(
        ["migrate", "--wait-timeout", "60"],
        runner_env(url.render_as_string(hide_password=False)),
    )
    error = one_error(result, ExitCode.DATABASE_UNAVAILABLE)
    assert "Access denied" in str(error["message"])
    assert "db.waiting" not in event_names(result.stderr)
    assert PASSWORD not in result.stderr + result.stdout


@pytest.mark.postgresql
def test_missing_postgresql_database_exits_3_without_retrying(postgresql_url: str) -> None:
    url = sa.make_url(postgresql_url).set(database="no_such_database_here")
    result = run_runner(["wait"], runner_env(url.render_as_string(hide_password=False)))
    error = one_error(result, ExitCode.DATABASE_UNAVAILABLE)
    assert "does not exist" in str(error["message"])
    assert "db.waiting" not in event_names(result.stderr)


@pytest.mark.postgresql
def test_password_never_logged(postgresql_url: str) -> None:
    # Trust authentication accepts any password, so the migration really runs with one.
    url = sa.make_url(postgresql_url).set(password=PASSWORD)
    result = run_runner(["migrate"], runner_env(url.render_as_string(hide_password=False)))
    assert result.returncode == 0, result.stderr
    assert "migrate.applied" in event_names(result.stderr)
    assert PASSWORD not in result.stderr + result.stdout


def test_sigterm_while_waiting_ends_at_once() -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:9/nothing"
    process = start_runner(["wait", "--wait-timeout", "120"], runner_env(url))
    read_until(process, '"db.waiting"')
    process.send_signal(signal.SIGTERM)
    err = finish(process, timeout=10).stderr
    assert process.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in err
    assert "runner.interrupted" in event_names(err)


# exit 4: lock timeout


@pytest.mark.parametrize("lock_timeout", ["0", "2"])
def test_lock_held_elsewhere_exits_4(database_url: str, lock_timeout: str) -> None:
    """The budget runs from the command's start: 0, like a slow start that spent it, gets
    one try, which still says who holds the lock before giving up."""
    with hold_lock(database_url):
        result = run_runner(["migrate", "--lock-timeout", lock_timeout],
                            runner_env(database_url))
    error = one_error(result, ExitCode.LOCK_TIMEOUT)
    assert "RUNNER_LOCK_TIMEOUT" in str(error["message"])
    (waiting, *_) = records(result.stderr, "lock.waiting")
    assert isinstance(waiting["holder"], dict) and waiting["holder"]["pid"] == os.getpid()
    assert isinstance(error["holder"], dict) and error["holder"]["pid"] == os.getpid()


# exit 5: not at head


def test_check_exits_5_then_0(database_url: str) -> None:
    env = runner_env(database_url)
    assert one_error(run_runner(["check"], env), ExitCode.NOT_AT_HEAD)["event"] == "check.behind"
    assert run_runner(["migrate"], env).returncode == 0
    result = run_runner(["check"], env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("at head")


# exit 6: several heads, or an unknown database revision: every command that reads the
# history is tested for both in test_state_commands.py.


# exit 7: a migration raises; the lock is free afterwards


def test_failing_migration_exits_7_and_frees_the_lock(project: Path, database_url: str) -> None:
    bad = add_revision(project, "bad", 'op.execute("SELECT * FROM no_such_table_anywhere")')
    result = run_runner(["migrate"], runner_env(database_url), cwd=project)
    error = one_error(result, ExitCode.MIGRATION_FAILED)
    assert error["revision"] == bad
    assert "no_such_table_anywhere" in str(error["error"])
    assert "lock.released" in event_names(result.stderr)
    with hold_lock(database_url):
        pass


# exit 1: a bug


def test_unexpected_error_exits_1_with_traceback(project: Path, sqlite_url: str) -> None:
    env_py = project / "migrations" / "env.py"
    env_py.write_text("raise RuntimeError('env.py is broken')\n" + env_py.read_text())
    result = run_runner(["migrate"], runner_env(sqlite_url), cwd=project)
    assert result.returncode == ExitCode.UNEXPECTED
    crash = [record for record in events(result.stderr) if record["event"] == "runner.crashed"]
    assert "RuntimeError: env.py is broken" in str(crash[0]["traceback"])


def test_a_second_migrate_takes_no_lock(database_url: str, project: Path) -> None:
    env = runner_env(database_url)
    prepare(project, env)
    assert run_runner(["migrate"], env, cwd=project).returncode == 0
    started = time.monotonic()
    with hold_lock(database_url):
        result = run_runner(["migrate", "--lock-timeout", "30"], env, cwd=project)
    assert result.returncode == 0, result.stderr
    assert event_names(result.stderr) == ["db.ready", "migrate.noop"]
    assert time.monotonic() - started < 30


def test_without_a_manifest_the_app_is_loaded_only_under_the_lock(
    database_url: str, project: Path
) -> None:
    """Only the app can tell whether the database is at head: it is loaded by the replica
    that holds the lock (a factory that migrates by itself cannot race the others)."""
    # No manifest (no `runner prepare`), and an app that counts the processes importing it.
    env = counted_env(project, database_url, prepared=False)
    assert run_runner(["migrate"], env, cwd=project).returncode == 0
    assert imports(project) == 1  # the replica that held the lock and migrated
    with hold_lock(database_url):
        result = run_runner(["migrate", "--lock-timeout", "2"], env, cwd=project)
    error = one_error(result, ExitCode.LOCK_TIMEOUT)
    assert error["holder"]["pid"] is not None
    # It waited for the lock the whole time, and never loaded the app.
    assert imports(project) == 1

"""Each failure in its class: one line, the documented exit code, no password fragment."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from runner import log, migration
from runner.errors import ExitCode
from runner.settings import resolve
from support import (
    EXAMPLE,
    add_revision,
    event_names,
    events,
    hold_lock,
    one_error,
    run_runner,
    runner_env,
    script_heads,
)


def assert_no_fragment(result: subprocess.CompletedProcess[str], password: str) -> None:
    """No four characters in a row of `password` (as written or decoded) in any output."""
    output = result.stdout + result.stderr
    for form in {password, urllib.parse.quote(password, safe="")}:
        for start in range(len(form) - 3):
            assert form[start : start + 4] not in output, (form[start : start + 4], output)


@pytest.mark.postgresql
@pytest.mark.parametrize("password", ["Tr0ub4dor@3xyz", "p@ss:w/rd%"])
def test_unencoded_password_is_never_shown(postgresql_url: str, password: str) -> None:
    # Written as a user would paste it, not percent-encoded.
    url = postgresql_url.replace("postgres@", f"postgres:{password}@", 1)
    result = run_runner(["migrate", "--wait-timeout", "1"], runner_env(url))
    assert result.returncode in (ExitCode.CONFIG, ExitCode.DATABASE_UNAVAILABLE), result.stderr
    one_error(result, result.returncode)
    assert_no_fragment(result, password)


@pytest.mark.postgresql
def test_encoded_password_in_an_env_py_traceback_is_masked(
    project: Path, postgresql_url: str
) -> None:
    # An env.py of before Flask-Migrate escaped '%' for configparser: it fails on p%40ss.
    env_py = project / "migrations" / "env.py"
    env_py.write_text(env_py.read_text().replace(".replace(\n            '%', '%%')", ""))
    url = postgresql_url.replace("postgres@", "postgres:p%40ss@", 1)
    result = run_runner(["migrate"], runner_env(url), project)
    assert result.returncode == ExitCode.UNEXPECTED, result.stderr
    assert "interpolation syntax" in result.stderr
    assert_no_fragment(result, "p%40ss")
    assert "%40ss" not in result.stderr


def test_revision_file_with_a_syntax_error_exits_6_naming_it(
    project: Path, sqlite_url: str
) -> None:
    broken = project / "migrations" / "versions" / "0000_broken.py"
    broken.write_text("revision = 'broken'\ndown_revision = None\ndef upgrade(:\n")
    result = run_runner(["migrate"], runner_env(sqlite_url), project)
    error = one_error(result, ExitCode.REVISIONS_UNUSABLE)
    assert str(broken) in error["message"]


def test_revision_file_that_fails_to_import_exits_6_naming_it(
    project: Path, sqlite_url: str
) -> None:
    revision = add_revision(project, "bad_import", "pass", imports="import no_such_module")
    [path] = (project / "migrations" / "versions").glob(f"{revision}_*.py")
    result = run_runner(["check"], runner_env(sqlite_url), project)
    error = one_error(result, ExitCode.REVISIONS_UNUSABLE)
    assert str(path) in error["message"]
    assert "no_such_module" in error["message"]


@pytest.mark.parametrize("command", ["migrate", "check"])
@pytest.mark.parametrize("how", ["empty", "missing"])
def test_empty_or_missing_history_exits_6_naming_the_directory(
    project: Path, sqlite_url: str, command: str, how: str
) -> None:
    versions = project / "migrations" / "versions"
    for path in versions.glob("*.py"):
        path.unlink()
    if how == "missing":
        for path in versions.iterdir():
            path.unlink() if path.is_file() else None
        for cache in versions.glob("__pycache__"):
            for item in cache.iterdir():
                item.unlink()
            cache.rmdir()
        versions.rmdir()
    result = run_runner([command], runner_env(sqlite_url), project)
    error = one_error(result, ExitCode.REVISIONS_UNUSABLE)
    assert str(versions) in error["message"]


def test_sql_range_backwards_exits_2(sqlite_url: str) -> None:
    first, _, last = ["d572e4e53b63", "648622ad6514", script_heads()[0]]
    result = run_runner(["sql", "--from", last, "--to", first], runner_env(sqlite_url))
    error = one_error(result, ExitCode.CONFIG)
    assert "--from" in error["message"] and "--to" in error["message"]
    same = run_runner(["sql", "--from", first, "--to", first], runner_env(sqlite_url))
    one_error(same, ExitCode.CONFIG)
    assert same.stdout == ""


def test_unopenable_sqlite_file_gets_a_path_hint(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'app.db'}"
    result = run_runner(["migrate"], runner_env(url))
    error = one_error(result, ExitCode.DATABASE_UNAVAILABLE)
    assert "directory" in error["message"]
    assert "credentials" not in error["message"]


# The app's own I/O


def noisy_project(project: Path, extra: str) -> Path:
    """The example app with `extra` lines run when its module loads."""
    app_py = project / "app.py"
    app_py.write_text(app_py.read_text() + "\n" + extra + "\n")
    return project


def test_app_prints_go_to_stderr_so_stdout_is_the_result(project: Path, sqlite_url: str) -> None:
    noisy_project(project, 'print("hello from the app")')
    env_py = project / "migrations" / "env.py"
    env_py.write_text(env_py.read_text() + '\nprint("hello from env.py")\n')
    assert run_runner(["migrate"], runner_env(sqlite_url), project).returncode == 0
    status = run_runner(["status", "--json"], runner_env(sqlite_url), project)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["pending"] == []
    sql = run_runner(["sql"], runner_env(sqlite_url), project)
    assert sql.returncode == 0, sql.stderr
    assert "hello" not in sql.stdout and "CREATE TABLE" in sql.stdout
    check = run_runner(["check"], runner_env(sqlite_url), project)
    assert check.stdout.startswith("at head")
    assert "hello from the app" in check.stderr


def test_a_non_daemon_thread_of_the_app_does_not_hold_the_process(
    project: Path, sqlite_url: str
) -> None:
    noisy_project(project, "import threading, time\n"
                  "threading.Thread(target=time.sleep, args=(600,), daemon=False).start()")
    started = time.monotonic()
    for command in (["migrate"], ["check"]):
        result = run_runner(command, runner_env(sqlite_url), project, timeout=60)
        assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60


# The small ones


@pytest.mark.postgresql
def test_noop_comes_after_the_lock_is_released(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], postgresql_url: str
) -> None:
    # This process waits for a lock another replica holds; while it sleeps between two
    # polls, that replica is done and a second one migrates: the lock is then free and
    # the database at head, which this process finds under the lock.
    monkeypatch.setenv("DATABASE_URL", postgresql_url)
    monkeypatch.chdir(EXAMPLE)
    monkeypatch.setattr(log.events, "format", "json")
    settings = resolve({"app": "app:create_app()"})
    holder = hold_lock(postgresql_url)

    def sleep(seconds: float) -> None:
        if holder.held:
            holder.close()
            other = run_runner(["migrate"], runner_env(postgresql_url))
            assert "migrate.applied" in event_names(other.stderr), other.stderr

    try:
        result = migration.migrate(settings, sleep=sleep)
    finally:
        holder.close()
    assert result.applied == ()
    names = event_names(capsys.readouterr().err)
    assert names.index("lock.acquired") < names.index("lock.released")
    assert names.index("lock.released") < names.index("migrate.noop")


@pytest.mark.postgresql
def test_migrate_failed_on_postgresql_says_where_the_database_really_is(
    project: Path, postgresql_url: str
) -> None:
    add_revision(project, "good", 'op.create_table("good", sa.Column("id", sa.Integer,'
                 " primary_key=True))")
    bad = add_revision(project, "bad", 'op.execute("SELECT no_such_function()")')
    result = run_runner(["migrate"], runner_env(postgresql_url), project)
    error = one_error(result, ExitCode.MIGRATION_FAILED)
    assert error["revision"] == bad
    # One transaction for the whole run: rolled back to where the run started (base).
    assert "the database is at base" in error["message"]
    assert "last revision that completed" not in error["message"]


def test_serve_exec_logs_the_bind_gunicorn_uses(sqlite_url: str) -> None:
    env = runner_env(sqlite_url, PORT="1")
    result = run_runner(["serve", "--", "--bind", "127.0.0.1:1", "--check-config"], env)
    assert result.returncode == 0, result.stderr
    execs = [e for e in events(result.stderr) if e["event"] == "serve.exec"]
    assert execs and execs[0]["bind"] == ["127.0.0.1:1"]

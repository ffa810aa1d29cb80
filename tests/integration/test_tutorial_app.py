"""A user's own app, written as the tutorials write it, with URLs as platforms write them.

tests/apps/tutorial_app: a package `myapp` with `create_app()`, `db = SQLAlchemy()` in
`myapp/models.py`, `migrations/` made by `flask db init` + `flask db migrate`, and
`FLASK_APP=myapp:create_app` (no parentheses) in `.flaskenv`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from runner.errors import ExitCode
from support import (
    TUTORIAL_APP,
    PrivatePostgresql,
    cmdline,
    copy_app,
    event_names,
    events,
    finish,
    free_port,
    get,
    killed_on_failure,
    one_error,
    private_postgresql,
    read_until,
    run_runner,
    runner_env,
    script_heads,
    start_runner,
    stop,
    version_rows,
)

HEADS = script_heads(TUTORIAL_APP / "migrations")
PLATFORM_SCHEMES = {"postgresql": "postgres", "mysql": "mysql", "sqlite": "sqlite"}


@pytest.fixture
def tutorial(tmp_path: Path) -> Path:
    """A copy of the tutorial app, to run in and to add files to."""
    return copy_app(TUTORIAL_APP, tmp_path / "tutorial_app")


def as_platforms_write_it(url: str) -> str:
    """`postgresql+psycopg://` as `postgres://`, `mysql+pymysql://` as `mysql://`."""
    parsed = make_url(url)
    return parsed.set(drivername=PLATFORM_SCHEMES[parsed.get_backend_name()]).render_as_string(
        hide_password=False)


def tutorial_env(database_url: str | None = None, **extra: str) -> dict[str, str]:
    """The runner's environment with FLASK_APP left to the app's .flaskenv."""
    env = runner_env(database_url, **extra)
    if "FLASK_APP" not in extra:
        del env["FLASK_APP"]
    return env


def test_migrates_and_serves_with_raw_urls(tutorial: Path, database_url: str) -> None:
    port = free_port()
    raw = as_platforms_write_it(database_url)
    served = start_runner(["run", "--", "--workers", "1"],
                          tutorial_env(raw, PORT=str(port)), cwd=tutorial)
    try:
        status, body = get(f"http://127.0.0.1:{port}/", time.monotonic() + 60)
        assert (status, json.loads(body)) == (200, {"users": 0, "posts": 0}), body
        # FLASK_APP=myapp:create_app from .flaskenv: gunicorn's workers load it as `flask`
        # does (it calls the factory).
        assert "runner.wsgi:serve('myapp:create_app')" in cmdline(served.pid)
    finally:
        _, err = stop(served)
    assert version_rows(database_url) == HEADS
    names = event_names("\n".join(line for line in err.splitlines() if line.startswith("{")))
    # After the exec the lines are gunicorn's and the app's, in the runner's format.
    assert "migrate.applied" in names[: names.index("serve.exec")]
    assert names.count("serve.exec") == 1


def test_dotenv_files_are_read_and_real_variables_win(
    tutorial: Path, postgresql_url: str, sqlite_url: str
) -> None:
    (tutorial / ".env").write_text(f"DATABASE_URL={as_platforms_write_it(postgresql_url)}\n")
    migrated = run_runner(["migrate"], tutorial_env(), cwd=tutorial)
    assert migrated.returncode == 0, migrated.stderr
    assert version_rows(postgresql_url) == HEADS
    # gunicorn's workers, which never read .env themselves, get what it set.
    port = free_port()
    served = start_runner(["run"], tutorial_env(PORT=str(port)), cwd=tutorial)
    try:
        status, body = get(f"http://127.0.0.1:{port}/", time.monotonic() + 60)
        assert status == 200, body
    finally:
        stop(served)

    # A variable set in the environment wins over .env and .flaskenv, as with `flask`.
    status = run_runner(["status", "--json"], tutorial_env(sqlite_url), cwd=tutorial)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["current"] == []
    renamed = run_runner(["status"], tutorial_env(FLASK_APP="no_such_module:create_app"),
                         cwd=tutorial)
    assert "no_such_module" in str(one_error(renamed, ExitCode.CONFIG)["message"])


def test_no_app_anywhere_names_flask_app(tmp_path: Path, sqlite_url: str) -> None:
    result = run_runner(["migrate"], tutorial_env(sqlite_url), cwd=tmp_path)
    message = str(one_error(result, ExitCode.CONFIG)["message"])
    assert "FLASK_APP" in message and str(tmp_path) in message


def test_missing_driver_names_the_package(tutorial: Path, sqlite_url: str) -> None:
    (tutorial / "myapp" / "models.py").write_text(
        "import MySQLdb\n" + (tutorial / "myapp" / "models.py").read_text())
    result = run_runner(["migrate"], tutorial_env(sqlite_url), cwd=tutorial)
    message = str(one_error(result, ExitCode.CONFIG)["message"])
    assert "No module named 'MySQLdb'" in message
    assert "pip install mysqlclient" in message


@pytest.fixture
def late_postgresql() -> Iterator[PrivatePostgresql]:
    """A private PostgreSQL, initialized but not started: the test starts it."""
    with private_postgresql() as server:
        yield server


@pytest.mark.postgresql
def test_factory_that_queries_waits_for_a_database_that_starts_late(
    tutorial: Path, late_postgresql: PrivatePostgresql
) -> None:
    # create_app('startup-check') runs a query: it needs the database before it can load.
    env = tutorial_env(late_postgresql.url, FLASK_APP="myapp:create_app('startup-check')")
    process = start_runner(["migrate", "--wait-timeout", "120"], env, cwd=tutorial)
    with killed_on_failure(process):
        # It found the database down and waits: only then does the database start.
        seen = read_until(process, '"db.waiting"')
        late_postgresql.start()
        result = finish(process, seen)
    assert process.returncode == 0, result.stderr
    records = events(result.stderr)
    names = [record["event"] for record in records]
    assert names[0] == "db.waiting" and "migrate.applied" in names
    assert version_rows(late_postgresql.admin_url) == HEADS


def test_the_apps_own_log_lines_come_out_in_the_runners_format(
    tutorial: Path, sqlite_url: str
) -> None:
    init = tutorial / "myapp" / "__init__.py"
    init.write_text(init.read_text().replace(
        "    return app\n", "    app.logger.warning('myapp is ready')\n    return app\n"))
    result = run_runner(["migrate"], tutorial_env(sqlite_url), cwd=tutorial)
    assert result.returncode == 0, result.stderr
    # support.events fails the test on any line that is not a JSON object.
    logged = [record for record in events(result.stderr) if record["event"] == "app.log"]
    assert [(r["level"], r["message"], r["logger"]) for r in logged] == [
        ("warning", "myapp is ready", "myapp")]


def test_serve_without_wait_for_head_does_not_wait_for_the_database(tutorial: Path) -> None:
    # Nothing listens there: `serve` alone hands over to gunicorn all the same.
    url = "postgres://app:pw@127.0.0.1:9/app"
    env = tutorial_env(url, PORT=str(free_port()), RUNNER_WAIT_TIMEOUT="120")
    process = start_runner(["serve"], env, cwd=tutorial)
    try:
        deadline = time.monotonic() + 30
        while not any("gunicorn" in part for part in cmdline(process.pid)):
            assert process.poll() is None and time.monotonic() < deadline, "no gunicorn"
            time.sleep(0.2)
    finally:
        _, err = stop(process)
    assert "db.waiting" not in event_names(
        "\n".join(line for line in err.splitlines() if line.startswith("{")))

"""Settings precedence: flag, then environment variable, then .flaskenv/.env, then defaults;
what only the app knows comes from loading it (runner.app)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from runner.app import load_app
from runner.errors import ConfigError
from runner.settings import SETTINGS_BY_NAME, read_dotenv, resolve
from support import EXAMPLE, clean_runner_environment


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_runner_environment(monkeypatch)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.setenv("FLASK_APP", "app:create_app()")
    monkeypatch.chdir(EXAMPLE)


def sqlite(tmp_path: Path, name: str) -> str:
    return f"sqlite:///{tmp_path / name}"


def test_defaults_are_the_contract() -> None:
    settings = resolve({})
    assert (settings.wait_timeout, settings.lock_timeout, settings.ddl_lock_timeout,
            settings.stop_timeout) == (60, 300, 5, 20)
    assert settings.log_format == "text"
    assert (settings.lint, settings.lint_allow, settings.lint_large_table_rows,
            settings.progress_interval) == ("warn", frozenset(), 10000, 10)
    assert settings.database_url is None and settings.runner_url is None
    assert settings.app == "app:create_app()"


def test_the_app_tells_what_only_it_knows() -> None:
    # The app's source files are the modules that loading it imported: the example's
    # `app`, unless an earlier test in this process imported it already.
    for name in [name for name, module in sys.modules.items()
                 if str(getattr(module, "__file__", "") or "").startswith(str(EXAMPLE))]:
        del sys.modules[name]
    app = load_app(resolve({}))
    assert app.migrations_directory == EXAMPLE / "migrations"
    # The example's own default: a SQLite file in its instance folder.
    assert app.database_url.backend == "sqlite"
    assert (app.database_url.database or "").endswith("example.db")
    assert app.source_files == (EXAMPLE / "app.py",)


def test_environment_beats_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RUNNER_WAIT_TIMEOUT", "7.5")
    monkeypatch.setenv("RUNNER_LOCK_TIMEOUT", "9")
    monkeypatch.setenv("RUNNER_LOG_FORMAT", "json")
    monkeypatch.setenv("RUNNER_LINT", "block")
    monkeypatch.setenv("RUNNER_LINT_ALLOW", "ban-drop-column, renaming-table")
    monkeypatch.setenv("DATABASE_URL", sqlite(tmp_path, "env.db"))
    settings = resolve({})
    assert (settings.wait_timeout, settings.lock_timeout) == (7.5, 9.0)
    assert settings.log_format == "json"
    assert settings.lint == "block"
    assert settings.lint_allow == {"ban-drop-column", "renaming-table"}
    assert settings.database_url is not None
    assert settings.database_url.database == str(tmp_path / "env.db")
    assert settings.runner_url_source == "DATABASE_URL"


def test_flags_beat_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RUNNER_WAIT_TIMEOUT", "7.5")
    monkeypatch.setenv("RUNNER_MIGRATIONS_DIR", "elsewhere")
    monkeypatch.setenv("DATABASE_URL", sqlite(tmp_path, "env.db"))
    settings = resolve({
        "wait_timeout": "2", "directory": "migrations",
        "database_url": sqlite(tmp_path, "flag.db"),
    })
    assert settings.wait_timeout == 2
    assert settings.directory == "migrations"
    assert settings.database_url is not None
    assert settings.database_url.database == str(tmp_path / "flag.db")
    assert settings.runner_url_source == "--database-url"
    # Exported so that the app, and gunicorn's workers after the exec, use the same database.
    assert settings.environment["DATABASE_URL"] == sqlite(tmp_path, "flag.db")


def test_database_url_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(sqlite(tmp_path, "file.db") + "\n")
    monkeypatch.setenv("DATABASE_URL_FILE", str(secret))
    settings = resolve({})
    assert settings.database_url is not None
    assert settings.database_url.database == str(tmp_path / "file.db")
    assert settings.environment["DATABASE_URL"] == sqlite(tmp_path, "file.db")
    assert settings.runner_url_source == "DATABASE_URL_FILE"


def test_migration_url_is_what_the_runner_uses_and_the_app_served_keeps_database_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "direct"
    secret.write_text(sqlite(tmp_path, "direct.db") + "\n")
    monkeypatch.setenv("DATABASE_URL", sqlite(tmp_path, "pooled.db"))
    monkeypatch.setenv("MIGRATION_DATABASE_URL_FILE", str(secret))
    settings = resolve({})
    # The app the runner loads migrates the direct database; gunicorn's keeps the pooled one.
    assert settings.runner_url is not None
    assert settings.runner_url.database == str(tmp_path / "direct.db")
    assert settings.app_environment["DATABASE_URL"] == sqlite(tmp_path, "direct.db")
    assert settings.environment["DATABASE_URL"] == sqlite(tmp_path, "pooled.db")
    assert load_app(settings).database_url.database == str(tmp_path / "direct.db")
    assert os.environ["DATABASE_URL"] == sqlite(tmp_path, "pooled.db")


def test_migration_url_from_two_sources_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MIGRATION_DATABASE_URL", sqlite(tmp_path, "a.db"))
    monkeypatch.setenv("MIGRATION_DATABASE_URL_FILE", str(tmp_path / "b"))
    with pytest.raises(ConfigError, match="both MIGRATION_DATABASE_URL and"
                       " MIGRATION_DATABASE_URL_FILE are set"):
        resolve({})


def test_an_app_that_ignores_database_url_is_refused_naming_both(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "fixed_app.py").write_text(
        "from flask import Flask\nfrom flask_migrate import Migrate\n"
        "from flask_sqlalchemy import SQLAlchemy\n"
        "db = SQLAlchemy()\n"
        "def create_app():\n"
        "    app = Flask(__name__)\n"
        f"    app.config['SQLALCHEMY_DATABASE_URI'] = {sqlite(tmp_path, 'fixed.db')!r}\n"
        "    db.init_app(app)\n"
        "    Migrate(app, db)\n"
        "    return app\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", sqlite(tmp_path, "other.db"))
    with pytest.raises(ConfigError, match="make the app read DATABASE_URL") as raised:
        load_app(resolve({"app": "fixed_app:create_app()"}))
    assert "fixed.db (its SQLALCHEMY_DATABASE_URI)" in str(raised.value)
    assert "other.db given by DATABASE_URL" in str(raised.value)


@pytest.mark.parametrize(
    ("flags", "variables", "message"),
    [
        ({"wait_timeout": "-1"}, {}, "--wait-timeout must be a finite number"),
        ({}, {"RUNNER_LOCK_TIMEOUT": "nan"}, "RUNNER_LOCK_TIMEOUT must be a finite number"),
        ({}, {"RUNNER_WAIT_TIMEOUT": "1m"}, "RUNNER_WAIT_TIMEOUT must be a number of seconds"),
        ({"log_format": "yaml"}, {}, "--log-format must be 'text' or 'json'"),
        ({"lint": "strict"}, {}, "--lint must be 'warn' or 'block' or 'off'"),
        ({}, {"RUNNER_LINT_LARGE_TABLE_ROWS": "many"}, "RUNNER_LINT_LARGE_TABLE_ROWS must be"),
        ({"database_url": "mssql+pyodbc://u:hunter2@host/db"}, {}, "'mssql' dialect"),
        ({"database_url": "not a url:hunter2@"}, {}, "not a database URL"),
        ({}, {"DATABASE_URL_FILE": "/nonexistent/secret"}, "DATABASE_URL_FILE="),
    ],
)
def test_bad_values_name_what_to_change(
    monkeypatch: pytest.MonkeyPatch, flags: dict[str, str], variables: dict[str, str],
    message: str,
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message) as raised:
        resolve(flags)
    assert "hunter2" not in str(raised.value)


def test_an_app_that_cannot_be_loaded_names_flask_app() -> None:
    with pytest.raises(ConfigError, match=r"could not load the app.*FLASK_APP"):
        load_app(resolve({"app": "nowhere_to_be_found:app"}))


def test_flaskenv_is_read_as_flask_reads_it_and_a_real_variable_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FLASK_APP")
    (tmp_path / ".flaskenv").write_text("FLASK_APP=from_flaskenv:create_app\n"
                                        "RUNNER_WAIT_TIMEOUT=7\n")
    (tmp_path / ".env").write_text("RUNNER_LOCK_TIMEOUT=8\nRUNNER_WAIT_TIMEOUT=9\n")
    (tmp_path / "below").mkdir()
    # From the working directory up, as `flask` looks for them.
    monkeypatch.chdir(tmp_path / "below")
    before = dict(os.environ)
    settings = resolve({})
    # .env wins over .flaskenv, as in `flask`.
    assert (settings.app, settings.wait_timeout, settings.lock_timeout) == (
        "from_flaskenv:create_app", 9, 8)
    assert settings.environment["FLASK_APP"] == "from_flaskenv:create_app"
    assert dict(os.environ) == before
    monkeypatch.setenv("FLASK_APP", "from_environment")
    assert resolve({}).app == "from_environment"
    assert resolve({"app": "from_flag"}).app == "from_flag"
    monkeypatch.setenv("FLASK_SKIP_DOTENV", "1")
    assert resolve({}).wait_timeout == 60


def test_dotenv_values_expand_as_flask_expands_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """flask.cli.load_dotenv, run on a copy of the environment, is the reference."""
    from flask.cli import load_dotenv

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".flaskenv").write_text("APP_MODULE=from_file\nFLASK_APP=${APP_MODULE}:make\n"
                                        "PLAIN=${HOME_DIR}/x\n")
    (tmp_path / ".env").write_text("SECRET='a$b'\nEMPTY=\n")
    environ = {"HOME_DIR": "/home/app", "APP_MODULE": "from_env"}
    read = read_dotenv(environ)
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(environ)
        load_dotenv()
        expected = {key: value for key, value in os.environ.items() if key not in environ}
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert read == expected


def test_settings_never_touch_the_process_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".flaskenv").write_text("SOMETHING_NEW=1\n")
    before = dict(os.environ)
    monkeypatch.chdir(tmp_path)
    settings = resolve({"database_url": "postgres://u:pw@db/app"})
    assert settings.environment["SOMETHING_NEW"] == "1"
    assert settings.environment["DATABASE_URL"] == "postgresql+psycopg://u:pw@db/app"
    assert dict(os.environ) == before


def test_budgets_count_from_the_start() -> None:
    settings = resolve({"wait_timeout": "30"})
    time.sleep(0.05)
    assert 29 < settings.remaining(settings.wait_timeout) < 29.96
    assert settings.remaining(0) == 0


def test_variable_only_settings_have_no_flag() -> None:
    assert {name for name, setting in SETTINGS_BY_NAME.items() if setting.flag is None} == {
        "lint_allow", "lint_large_table_rows", "progress_interval"}

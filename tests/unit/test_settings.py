"""Settings precedence: flag, then environment variable, then the app's config, then defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runner.errors import ConfigError
from runner.settings import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
    load_settings,
    resolve_options,
)
from support import EXAMPLE, clean_runner_environment


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_runner_environment(monkeypatch)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.setenv("FLASK_APP", "app:create_app()")
    monkeypatch.chdir(EXAMPLE)


def sqlite(tmp_path: Path, name: str) -> str:
    return f"sqlite:///{tmp_path / name}"


def test_defaults_come_from_the_app_and_the_contract() -> None:
    settings = load_settings({})
    assert settings.wait_timeout == DEFAULT_WAIT_TIMEOUT == 60
    assert settings.lock_timeout == DEFAULT_LOCK_TIMEOUT == 300
    assert settings.log_format == "text"
    assert settings.migrations_directory.resolve() == EXAMPLE / "migrations"
    # The example's own default: a SQLite file in its instance folder.
    assert settings.database_url.get_backend_name() == "sqlite"
    assert settings.database_url.database.endswith("example.db")
    assert settings.exec_environment["PORT"] == "8000"


def test_environment_beats_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RUNNER_WAIT_TIMEOUT", "7.5")
    monkeypatch.setenv("RUNNER_LOCK_TIMEOUT", "9")
    monkeypatch.setenv("RUNNER_LOG_FORMAT", "json")
    monkeypatch.setenv("DATABASE_URL", sqlite(tmp_path, "env.db"))
    monkeypatch.setenv("PORT", "9999")
    settings = load_settings({})
    assert (settings.wait_timeout, settings.lock_timeout) == (7.5, 9.0)
    assert settings.log_format == "json"
    assert settings.database_url.database == str(tmp_path / "env.db")
    assert settings.exec_environment["PORT"] == "9999"


def test_flags_beat_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RUNNER_WAIT_TIMEOUT", "7.5")
    monkeypatch.setenv("RUNNER_MIGRATIONS_DIR", "elsewhere")
    monkeypatch.setenv("DATABASE_URL", sqlite(tmp_path, "env.db"))
    settings = load_settings({
        "wait_timeout": "2", "directory": "migrations",
        "database_url": sqlite(tmp_path, "flag.db"),
    })
    assert settings.wait_timeout == 2
    assert settings.migrations_directory == EXAMPLE / "migrations"
    assert settings.database_url.database == str(tmp_path / "flag.db")
    # Exported so that the app, and gunicorn's workers after the exec, use the same database.
    assert settings.exec_environment["DATABASE_URL"] == sqlite(tmp_path, "flag.db")


def test_database_url_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(sqlite(tmp_path, "file.db") + "\n")
    monkeypatch.setenv("DATABASE_URL_FILE", str(secret))
    settings = load_settings({})
    assert settings.database_url.database == str(tmp_path / "file.db")
    assert settings.exec_environment["DATABASE_URL"] == sqlite(tmp_path, "file.db")


def test_migration_url_is_what_the_runner_uses_and_the_app_served_keeps_database_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "direct"
    secret.write_text(sqlite(tmp_path, "direct.db") + "\n")
    monkeypatch.setenv("DATABASE_URL", sqlite(tmp_path, "pooled.db"))
    monkeypatch.setenv("MIGRATION_DATABASE_URL_FILE", str(secret))
    settings = load_settings({})
    # The app the runner loads migrates the direct database; gunicorn's keeps the pooled one.
    assert settings.database_url.database == str(tmp_path / "direct.db")
    assert settings.exec_environment["DATABASE_URL"] == sqlite(tmp_path, "pooled.db")
    assert os.environ["DATABASE_URL"] == sqlite(tmp_path, "pooled.db")
    flagged = load_settings({"migration_database_url": sqlite(tmp_path, "flag.db")})
    assert flagged.database_url.database == str(tmp_path / "flag.db")


def test_migration_url_from_two_sources_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MIGRATION_DATABASE_URL", sqlite(tmp_path, "a.db"))
    monkeypatch.setenv("MIGRATION_DATABASE_URL_FILE", str(tmp_path / "b"))
    with pytest.raises(ConfigError, match="both MIGRATION_DATABASE_URL and"
                       " MIGRATION_DATABASE_URL_FILE are set"):
        resolve_options({})


def test_app_that_ignores_database_url_is_refused(
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
    with pytest.raises(ConfigError, match="make the app read DATABASE_URL"):
        load_settings({"app": "fixed_app:create_app()",
                       "database_url": sqlite(tmp_path, "other.db")})


@pytest.mark.parametrize(
    ("flags", "variables", "message"),
    [
        ({"wait_timeout": "-1"}, {}, "--wait-timeout must be a finite number"),
        ({}, {"RUNNER_LOCK_TIMEOUT": "nan"}, "RUNNER_LOCK_TIMEOUT must be a finite number"),
        ({}, {"RUNNER_WAIT_TIMEOUT": "1m"}, "RUNNER_WAIT_TIMEOUT must be a number of seconds"),
        ({"log_format": "yaml"}, {}, "--log-format must be 'text' or 'json'"),
        ({"app": "nowhere_to_be_found:app"}, {}, "could not load the app"),
        ({"database_url": "postgresql+nodriver://u:hunter2@host/db"}, {}, None),
        ({}, {"DATABASE_URL_FILE": "/nonexistent/secret"}, "DATABASE_URL_FILE="),
    ],
)
def test_bad_values_name_what_to_change(
    monkeypatch: pytest.MonkeyPatch, flags: dict[str, str], variables: dict[str, str],
    message: str | None,
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    if message is None:
        # A URL the app cannot use: the error must not quote its password.
        with pytest.raises(ConfigError) as raised:
            load_settings(flags)
        assert "hunter2" not in str(raised.value)
        return
    with pytest.raises(ConfigError, match=message):
        load_settings(flags)


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
    options = resolve_options({})
    # .env wins over .flaskenv, as in `flask`.
    assert (options.app, options.wait_timeout, options.lock_timeout) == (
        "from_flaskenv:create_app", 9, 8)
    assert options.environment["FLASK_APP"] == "from_flaskenv:create_app"
    assert dict(os.environ) == before
    monkeypatch.setenv("FLASK_APP", "from_environment")
    assert resolve_options({}).app == "from_environment"
    assert resolve_options({"app": "from_flag"}).app == "from_flag"


def test_loading_the_app_leaves_the_process_environment_alone(tmp_path: Path) -> None:
    before = dict(os.environ)
    settings = load_settings({"database_url": sqlite(tmp_path, "flag.db")})
    # The app saw the URL while it was created, and gunicorn will get it too ...
    assert settings.database_url.database == str(tmp_path / "flag.db")
    assert settings.exec_environment["DATABASE_URL"] == sqlite(tmp_path, "flag.db")
    # ... but the process's environment is as it was.
    assert dict(os.environ) == before


def test_path_form_reaches_gunicorn_through_pythonpath(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings({"app": str(EXAMPLE / "app.py"),
                              "database_url": sqlite(tmp_path, "path.db")})
    assert settings.app_path == str(EXAMPLE / "app.py")
    assert settings.gunicorn_app == "app:create_app()"
    assert settings.exec_environment["PYTHONPATH"].split(os.pathsep)[0] == str(EXAMPLE)

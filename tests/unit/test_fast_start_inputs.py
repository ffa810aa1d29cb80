"""What the fast start reads without the app: the plain settings, the app's source."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.errors import ConfigError
from runner.fastpath import app_source_doubt, describe_target, parse_url
from runner.settings import plain_options
from support import EXAMPLE

NAMES = ("app", "database_url", "directory", "wait_timeout", "log_format")
URL = "postgresql://app:s3cret@db/app"


@pytest.fixture
def in_directory(tmp_path: Path) -> Iterator[Path]:
    """The test runs in an empty directory of its own (no .flaskenv/.env above it)."""
    before = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(before)


def test_the_url_and_directory_come_from_flags_or_the_environment(
    in_directory: Path
) -> None:
    secret = in_directory / "url"
    secret.write_text(URL + "\n")
    env = {"DATABASE_URL_FILE": str(secret), "RUNNER_MIGRATIONS_DIR": "migrations",
           "RUNNER_WAIT_TIMEOUT": "7"}
    plain = plain_options({}, NAMES, env)
    assert plain is not None
    assert plain.database_url == URL
    assert plain.directory == in_directory / "migrations"
    assert plain.wait_timeout == 7
    flagged = plain_options({"directory": "/srv/m", "database_url": "sqlite:////x.db"}, NAMES, env)
    assert flagged is not None
    assert (flagged.database_url, flagged.directory) == ("sqlite:////x.db", Path("/srv/m"))


def test_only_the_app_knows_the_url_or_the_directory(in_directory: Path) -> None:
    assert plain_options({}, NAMES, {"DATABASE_URL": URL}) is None
    assert plain_options({}, NAMES, {"RUNNER_MIGRATIONS_DIR": "migrations"}) is None


def test_dotenv_files_above_are_read_as_flask_reads_them(in_directory: Path) -> None:
    (in_directory / ".flaskenv").write_text("FLASK_APP=web:create_app\n"
                                             "DATABASE_URL=sqlite:////from-flaskenv.db\n"
                                             "RUNNER_MIGRATIONS_DIR=db/migrations\n"
                                             "RUNNER_LOG_FORMAT=json\n")
    (in_directory / ".env").write_text("DATABASE_URL='sqlite:////from-env.db'\n")
    below = in_directory / "project"
    below.mkdir()
    os.chdir(below)
    plain = plain_options({}, NAMES, {})
    assert plain is not None
    # .env wins over .flaskenv, the environment over both, as in `flask`.
    assert (plain.app, plain.database_url) == ("web:create_app", "sqlite:////from-env.db")
    assert plain.directory == below / "db/migrations"
    assert plain.log_format == "json"
    plain = plain_options({}, NAMES, {"DATABASE_URL": URL})
    assert plain is not None and plain.database_url == URL
    # FLASK_SKIP_DOTENV: no files, so nothing names the URL or the directory.
    assert plain_options({}, NAMES, {"FLASK_SKIP_DOTENV": "1"}) is None
    assert plain_options({}, NAMES, {"FLASK_SKIP_DOTENV": "false"}) is not None


def test_dotenv_files_are_left_to_flask_when_they_could_be_read_differently(
    in_directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"DATABASE_URL": URL, "RUNNER_MIGRATIONS_DIR": "migrations"}
    (in_directory / ".env").write_text("SECRET_KEY=x\n")
    assert plain_options({}, NAMES, env) is not None
    # A value that refers to another variable: python-dotenv expands it differently here.
    (in_directory / ".env").write_text("DATABASE_URL=postgresql://app@${DB_HOST}/app\n")
    assert plain_options({}, NAMES, env) is None
    # Without python-dotenv, only the full path can say that the files are ignored.
    (in_directory / ".env").write_text("SECRET_KEY=x\n")
    monkeypatch.setitem(sys.modules, "dotenv", None)
    assert plain_options({}, NAMES, env) is None


def test_bad_settings_are_the_same_errors_as_on_the_full_path(in_directory: Path) -> None:
    env = {"DATABASE_URL": URL, "RUNNER_MIGRATIONS_DIR": "m", "RUNNER_WAIT_TIMEOUT": "soon"}
    with pytest.raises(ConfigError, match="RUNNER_WAIT_TIMEOUT must be a number"):
        plain_options({}, NAMES, env)
    with pytest.raises(ConfigError, match="both DATABASE_URL and DATABASE_URL_FILE"):
        plain_options({}, NAMES, {**env, "DATABASE_URL_FILE": "/x"})


def test_the_examples_app_gives_migrate_no_version_table(in_directory: Path) -> None:
    os.chdir(EXAMPLE)
    assert app_source_doubt("app:create_app()") is None
    assert app_source_doubt(None) is None  # app.py, as flask finds it
    assert app_source_doubt(str(EXAMPLE / "app.py")) is None


APPS = {
    "a version table": "migrate = Migrate(app, db, version_table='deploy_version')\n",
    "a version table schema": "migrate.init_app(app, db, version_table_schema='ops')\n",
    "arguments through **": "migrate = Migrate(app, db, **settings)\n",
    "init_app through **": "migrate.init_app(app, db, **app.config['MIGRATE'])\n",
}


@pytest.mark.parametrize("source", APPS.values(), ids=APPS.keys())
def test_an_app_that_may_give_migrate_a_version_table_is_a_doubt(
    in_directory: Path, source: str
) -> None:
    package = in_directory / "myapp"
    package.mkdir()
    (package / "__init__.py").write_text("from myapp.extensions import migrate\n")
    (package / "extensions.py").write_text(source)
    doubt = app_source_doubt("myapp:create_app")
    assert doubt is not None
    assert "extensions.py" in doubt
    (package / "extensions.py").write_text("migrate = Migrate(app, db, render_as_batch=True)\n")
    assert app_source_doubt("myapp:create_app") is None


def test_an_app_that_cannot_be_found_is_a_doubt(in_directory: Path) -> None:
    assert app_source_doubt("nowhere_to_be_found:create_app") is not None
    assert app_source_doubt(None) is not None  # no wsgi.py, no app.py


def test_the_target_is_described_without_its_password() -> None:
    target = parse_url("postgresql://app:s3cret@[::1]:6543/app")
    assert target is not None
    assert describe_target(target) == "postgresql://app@[::1]:6543/app"

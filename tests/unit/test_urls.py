"""URLs as platforms write them get a driver that is installed; one that names a driver is kept."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from runner import urls
from runner.errors import ConfigError
from runner.settings import resolve_options

# What this environment has: psycopg 3 and PyMySQL, not psycopg2 nor mysqlclient.
pytestmark = pytest.mark.skipif(
    urls._installed("psycopg2") or urls._installed("MySQLdb"),
    reason="psycopg2 or mysqlclient is installed here: the defaults would be kept",
)


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path: an (empty) package created in it counts as installed."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path


def install(directory: Path, module: str) -> None:
    (directory / module).mkdir()
    (directory / module / "__init__.py").write_text("")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:pw@db:5432/app", "postgresql+psycopg://u:pw@db:5432/app"),
        ("postgresql://u:pw@db/app", "postgresql+psycopg://u:pw@db/app"),
        ("mysql://u:pw@db/app?charset=utf8mb4", "mysql+pymysql://u:pw@db/app?charset=utf8mb4"),
        ("mariadb://u:pw@db/app", "mariadb+pymysql://u:pw@db/app"),
        # A URL that names its driver, or another database, is the user's choice.
        ("postgresql+psycopg://u:pw@db/app", "postgresql+psycopg://u:pw@db/app"),
        ("postgresql+pg8000://u:pw@db/app", "postgresql+pg8000://u:pw@db/app"),
        ("mysql+mysqldb://u:pw@db/app", "mysql+mysqldb://u:pw@db/app"),
        ("sqlite:////data/app.db", "sqlite:////data/app.db"),
    ],
)
def test_scheme_without_driver_gets_an_installed_one(given: str, expected: str) -> None:
    normalized = urls.normalize_url(make_url(given))
    assert normalized.render_as_string(hide_password=False) == expected


def test_installed_default_drivers_are_kept(installed: Path) -> None:
    install(installed, "psycopg2")
    install(installed, "MySQLdb")
    assert urls.normalize_url(make_url("postgres://u@db/app")).drivername == "postgresql"
    assert urls.normalize_url(make_url("postgresql://u@db/app")).drivername == "postgresql"
    assert urls.normalize_url(make_url("mysql://u@db/app")).drivername == "mysql"


def test_sqlalchemy_without_psycopg3_dialect_names_psycopg2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # SQLAlchemy 1.4: no sqlalchemy.dialects.postgresql.psycopg module, and no psycopg2.
    real = urls._installed
    monkeypatch.setattr(urls, "_installed",
                        lambda module: not module.endswith("postgresql.psycopg") and real(module))
    with pytest.raises(ConfigError, match="pip install psycopg2-binary") as raised:
        urls.normalize_url(make_url("postgresql://u:hunter2@db/app"))
    assert "hunter2" not in str(raised.value)


def test_the_app_receives_the_normalized_url(tmp_path: Path) -> None:
    before = dict(os.environ)
    options = resolve_options({}, {"DATABASE_URL": "postgres://u:p%40ss%2Fw@db:5432/app"})
    exported = options.environment["DATABASE_URL"]
    assert exported == "postgresql+psycopg://u:p%40ss%2Fw@db:5432/app"
    assert make_url(exported).password == "p@ss/w"
    assert options.database_url is not None
    assert options.database_url.drivername == "postgresql+psycopg"
    # Resolving changed nothing in the process.
    assert dict(os.environ) == before


def test_a_url_with_its_driver_is_exported_as_written() -> None:
    written = "mysql+pymysql://u:pw@db/app?charset=utf8mb4&ssl_disabled=true"
    assert resolve_options({"database_url": written}, {}).environment["DATABASE_URL"] == written


def test_unknown_scheme_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="--database-url/DATABASE_URL names an unknown"):
        resolve_options({}, {"DATABASE_URL": "postgresq://u:hunter2@db/app"})


def test_the_check_never_imports_a_driver() -> None:
    urls.normalize_url(make_url("mysql://u@db/app"))
    assert "MySQLdb" not in sys.modules

"""URLs: split and rendered as SQLAlchemy does; platforms' schemes get an installed driver."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from runner import urls
from runner.errors import ConfigError
from runner.settings import resolve

# What this environment has: psycopg 3 and PyMySQL, not psycopg2 nor mysqlclient.
needs_bundled_drivers = pytest.mark.skipif(
    urls.installed("psycopg2") or urls.installed("MySQLdb"),
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


def assert_same_as_sqlalchemy(text: str) -> None:
    ours, theirs = urls.parse_url(text), make_url(text)
    assert (ours.drivername, ours.username, ours.password, ours.host, ours.port,
            ours.database) == (theirs.drivername, theirs.username, theirs.password,
                               theirs.host, theirs.port, theirs.database)
    assert dict(ours.query) == dict(theirs.query)
    assert ours.describe() == theirs.render_as_string(hide_password=True)
    assert ours.render() == theirs.render_as_string(hide_password=False)


@pytest.mark.parametrize("text", [
    "postgresql://u:pw@db:5432/app",
    "postgresql+psycopg://u:p%40ss%2Fw@db/app?sslmode=require&application_name=x",
    "mysql+pymysql://u:pw@[::1]:3306/app?charset=utf8mb4",
    "sqlite:////data/app.db",
    "sqlite:///relative.db",
    "sqlite://",
    "postgresql://u@/app?host=/run/postgresql",
    "mysql://root@127.0.0.1/app",
    "postgresql://u:p@ss@db/app",
])
def test_urls_split_and_render_as_sqlalchemy_does(text: str) -> None:
    assert_same_as_sqlalchemy(text)


_PART = st.text(alphabet=st.characters(codec="ascii", exclude_characters="\x00"), max_size=12)


@given(user=_PART, password=_PART, host=st.from_regex(r"[a-z0-9.-]{1,12}", fullmatch=True),
       port=st.one_of(st.none(), st.integers(1, 65535)),
       database=st.from_regex(r"[A-Za-z0-9_./%-]{0,12}", fullmatch=True))
def test_any_url_splits_as_sqlalchemy_splits_it(
    user: str, password: str, host: str, port: int | None, database: str
) -> None:
    from sqlalchemy.engine import URL

    text = URL.create("postgresql+psycopg", user, password, host, port,
                      database).render_as_string(hide_password=False)
    assert_same_as_sqlalchemy(text)


@pytest.mark.parametrize("text", ["", "postgresql", "://x", "postgresql://u:pw@db:port/x",
                                  "a b://c"])
def test_not_a_url_names_the_setting_not_the_password(text: str) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL is not a database URL"):
        urls.parse_url(text + "hunter2", "DATABASE_URL")


@needs_bundled_drivers
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
    assert urls.normalize_url(urls.parse_url(given)).render() == expected


def test_installed_default_drivers_are_kept(installed: Path) -> None:
    install(installed, "psycopg2")
    install(installed, "MySQLdb")
    assert urls.normalize_url(urls.parse_url("postgres://u@db/app")).drivername == "postgresql"
    assert urls.normalize_url(urls.parse_url("postgresql://u@db/app")).drivername == "postgresql"
    assert urls.normalize_url(urls.parse_url("mysql://u@db/app")).drivername == "mysql"


@needs_bundled_drivers
def test_sqlalchemy_without_psycopg3_dialect_names_psycopg2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # SQLAlchemy 1.4: no sqlalchemy.dialects.postgresql.psycopg module, and no psycopg2.
    real = urls.installed
    monkeypatch.setattr(urls, "installed",
                        lambda module: not module.endswith("postgresql.psycopg") and real(module))
    with pytest.raises(ConfigError, match="pip install psycopg2-binary") as raised:
        urls.normalize_url(urls.parse_url("postgresql://u:hunter2@db/app"))
    assert "hunter2" not in str(raised.value)


def test_installed_looks_without_importing() -> None:
    assert urls.installed("sqlalchemy.dialects.postgresql.psycopg")
    assert not urls.installed("sqlalchemy.dialects.nothing_here")
    assert not urls.installed("no_such_top_level_module.x")
    probe = ("import sys; from runner import urls; urls.installed("
             "'sqlalchemy.dialects.postgresql.psycopg'); print('sqlalchemy' in sys.modules)")
    import subprocess

    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


@needs_bundled_drivers
def test_the_app_receives_the_normalized_url() -> None:
    before = dict(os.environ)
    settings = resolve({}, {"DATABASE_URL": "postgres://u:p%40ss%2Fw@db:5432/app"})
    exported = settings.environment["DATABASE_URL"]
    assert exported == "postgresql+psycopg://u:p%40ss%2Fw@db:5432/app"
    assert make_url(exported).password == "p@ss/w"
    assert settings.database_url is not None
    assert settings.database_url.drivername == "postgresql+psycopg"
    # Resolving changed nothing in the process.
    assert dict(os.environ) == before


def test_a_url_with_its_driver_is_exported_as_written() -> None:
    written = "mysql+pymysql://u:pw@db/app?ssl_disabled=true&charset=utf8mb4"
    assert resolve({"database_url": written}, {}).environment["DATABASE_URL"] == written


def test_unknown_scheme_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL names the 'postgresq' dialect"):
        resolve({}, {"DATABASE_URL": "postgresq://u:hunter2@db/app"})


def test_the_check_never_imports_a_driver() -> None:
    urls.normalize_url(urls.parse_url("mysql://u@db/app"))
    assert "MySQLdb" not in sys.modules


def test_a_folder_named_as_a_driver_is_not_an_installed_driver(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory on sys.path named `mariadb` (a project's config folder, tests/e2e/mariadb
    in a pytest worker) is a namespace package to find_spec, not the driver."""
    (tmp_path / "pymysql_lookalike").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    assert not urls.installed("pymysql_lookalike")
    assert urls.installed("pymysql")

"""Shared fixtures: a fresh database per test on each server, dropped after it."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from support import ADMIN_URLS, EXAMPLE, DatabaseFactory

SERVER_NAMES = {"postgresql": "PostgreSQL", "mysql": "MariaDB"}


def _unavailable(what: str, error: Exception) -> None:
    """Skip, or fail when RUNNER_REQUIRE_DATABASES=1 (CI), because a server is down."""
    message = f"{what} is not reachable: {' '.join(str(error).split())[:200]}"
    if os.environ.get("RUNNER_REQUIRE_DATABASES") == "1":
        pytest.fail(message + " (RUNNER_REQUIRE_DATABASES=1: the database tests are required)")
    pytest.skip(message)


@pytest.fixture
def new_database() -> Iterator[DatabaseFactory]:
    """Make empty databases on a server ('postgresql' or 'mysql'); all dropped after the test."""
    created: list[tuple[sa.Engine, str, str]] = []

    def make(kind: str) -> str:
        engine = sa.create_engine(
            ADMIN_URLS[kind], isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
        )
        name = f"mr_{uuid.uuid4().hex[:12]}"
        quoted = f'"{name}"' if kind == "postgresql" else f"`{name}`"
        try:
            with engine.connect() as connection:
                connection.execute(sa.text(f"CREATE DATABASE {quoted}"))
        except sa.exc.OperationalError as exc:
            _unavailable(SERVER_NAMES[kind], exc)
        created.append((engine, kind, quoted))
        return engine.url.set(database=name).render_as_string(hide_password=False)

    yield make
    for engine, kind, quoted in created:
        force = " WITH (FORCE)" if kind == "postgresql" else ""
        with engine.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {quoted}{force}"))
        engine.dispose()


@pytest.fixture
def postgresql_url(new_database: DatabaseFactory) -> str:
    """A URL to a new, empty PostgreSQL database, dropped after the test."""
    return new_database("postgresql")


@pytest.fixture
def mysql_url(new_database: DatabaseFactory) -> str:
    """A URL to a new, empty MariaDB/MySQL database, dropped after the test."""
    return new_database("mysql")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A URL to a SQLite file in the test's own directory."""
    (tmp_path / "data").mkdir(exist_ok=True)
    return f"sqlite:///{tmp_path / 'data' / 'app.db'}"


DIALECTS = [
    pytest.param("postgresql", marks=pytest.mark.postgresql),
    pytest.param("mysql", marks=pytest.mark.mysql),
    pytest.param("sqlite"),
]


@pytest.fixture(params=DIALECTS)
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh database of each kind in turn: PostgreSQL, MariaDB, SQLite."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the example app and its migrations, for tests that add revisions."""
    target = tmp_path / "project"
    shutil.copytree(
        EXAMPLE, target, ignore=shutil.ignore_patterns("instance", "__pycache__", "*.db")
    )
    return target

"""Shared fixtures: a fresh database per test on each server, and the runner as a real process."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from support import EXAMPLE

POSTGRESQL_ADMIN = os.environ.get(
    "TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MYSQL_ADMIN = os.environ.get("TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/")


def _unavailable(what: str, error: Exception) -> None:
    """Skip, or fail when RUNNER_REQUIRE_DATABASES=1 (CI), because a server is down."""
    message = f"{what} is not reachable: {' '.join(str(error).split())[:200]}"
    if os.environ.get("RUNNER_REQUIRE_DATABASES") == "1":
        pytest.fail(message + " (RUNNER_REQUIRE_DATABASES=1: the database tests are required)")
    pytest.skip(message)


def _admin_engine(url: str, what: str) -> sa.Engine:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as exc:
        _unavailable(what, exc)
    return engine


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    """A URL to a new, empty PostgreSQL database, dropped after the test."""
    engine = _admin_engine(POSTGRESQL_ADMIN, "PostgreSQL")
    name = f"mr_{uuid.uuid4().hex[:12]}"
    with engine.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield engine.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """A URL to a new, empty MariaDB/MySQL database, dropped after the test."""
    engine = _admin_engine(MYSQL_ADMIN, "MariaDB")
    name = f"mr_{uuid.uuid4().hex[:12]}"
    with engine.connect() as connection:
        connection.execute(sa.text(f"CREATE DATABASE `{name}`"))
    try:
        yield engine.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        engine.dispose()


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

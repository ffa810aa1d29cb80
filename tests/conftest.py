"""Shared fixtures: a fresh database per test on each server, dropped after it."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from support import (
    EXAMPLE,
    REQUIRE_DATABASES,
    DatabaseFactory,
    copy_app,
    fresh_database,
    unavailable,
)

SERVER_NAMES = {"postgresql": "PostgreSQL", "mysql": "MariaDB"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """With pytest-xdist (./run.sh test), the container tests share one worker and run one
    after another: they build images and start pods that other container tests reuse."""
    for item in items:
        if "e2e" in item.path.parts:
            item.add_marker(pytest.mark.xdist_group("e2e"))


@pytest.fixture(autouse=True)
def restore_sys_path() -> Iterator[None]:
    """Loading an app in-process puts its directory on sys.path, as `flask` does: no test
    may leave it there for the next one to import its modules from."""
    saved = list(sys.path)
    yield
    sys.path[:] = saved


@pytest.fixture
def new_database() -> Iterator[DatabaseFactory]:
    """Make empty databases on a server ('postgresql' or 'mysql'); all dropped after the test."""
    with contextlib.ExitStack() as stack:

        def make(kind: str) -> str:
            try:
                return stack.enter_context(fresh_database(kind))
            except sa.exc.OperationalError as exc:
                unavailable(f"{SERVER_NAMES[kind]} is not reachable: "
                            f"{' '.join(str(exc).split())[:200]}", REQUIRE_DATABASES)

        yield make


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
    return copy_app(EXAMPLE, tmp_path / "project")

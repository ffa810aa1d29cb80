"""Shared fixtures: a fresh database per test on each server, dropped after it."""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner import log
from support import (
    EXAMPLE,
    KINDS,
    DatabaseFactory,
    Loader,
    copy_app,
    project_loader,
    server_database,
)


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


@pytest.fixture(autouse=True)
def restore_event_log() -> Iterator[None]:
    """The runner's process-wide event log (runner.log.events): a test that runs a command
    in-process sets its format and stream and registers secrets in it, and it keeps the
    last event and fields; the next test starts from the state before."""
    state = vars(log.events)
    saved = {key: copy.copy(value) if isinstance(value, dict | set | list) else value
             for key, value in state.items()}
    yield
    state.clear()
    state.update(saved)


@pytest.fixture(autouse=True)
def restore_logger_filters() -> Iterator[None]:
    """Logger filters a test adds in-process (runner.wsgi.serve adds one to Alembic's
    plugins logger each time gunicorn would load the app) are gone after it."""
    manager = logging.Logger.manager
    loggers = [logging.getLogger(), *(logger for logger in manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    saved = {logger: list(logger.filters) for logger in loggers}
    yield
    for logger in [logging.getLogger(), *manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger):
            logger.filters = list(saved.get(logger, []))


@pytest.fixture
def new_database() -> Iterator[DatabaseFactory]:
    """Make empty databases on a server ('postgresql' or 'mysql'); all dropped after the test.
    A server that is not reachable skips the test (fails it where RUNNER_REQUIRE_DATABASES)."""
    with contextlib.ExitStack() as stack:

        def make(kind: str) -> str:
            return stack.enter_context(server_database(kind))

        yield make


@pytest.fixture
def load_project(monkeypatch: pytest.MonkeyPatch) -> Iterator[Loader]:
    """Load apps in-process as `flask` does (support.project_loader); their modules are
    forgotten after the test."""
    with project_loader(monkeypatch) as load:
        yield load


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


DIALECTS = [*KINDS, pytest.param("sqlite")]


@pytest.fixture(params=DIALECTS)
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh database of each kind in turn: PostgreSQL, MariaDB, SQLite."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the example app and its migrations, for tests that add revisions."""
    return copy_app(EXAMPLE, tmp_path / "project")

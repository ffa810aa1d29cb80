"""The runner's own connection when something is wrong: the server dropped it, the URL's
parameters are not the driver's, the lock file cannot be made; and what the lock's
connection sets for itself (MySQL's wait_timeout). Real servers, real processes."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from runner import database
from runner.drivers import VersionTable, lock_name, open_driver
from runner.drivers.sqlite import lock_path
from runner.errors import ExitCode
from runner.urls import normalize_url, parse_url
from support import EXAMPLE, copy_app, execute, one_error, run_runner, runner_env


def _driver(url: str):  # type: ignore[no-untyped-def]
    return open_driver(normalize_url(parse_url(url)), VersionTable(), 5)


def _server_id(driver) -> int:  # type: ignore[no-untyped-def]
    query = ("SELECT pg_backend_pid()" if driver.backend == "postgresql"
             else "SELECT CONNECTION_ID()")
    with driver.scope():
        ((server_id,),) = driver.fetch(query)
    return int(server_id)


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_a_dropped_connection_is_opened_again_by_the_next_reading(
        kind: str, new_database) -> None:  # type: ignore[no-untyped-def]
    """A waiter or `status` whose connection the server ended (a restart, a failover, an
    idle timeout) gets the error once; the next reading connects anew, not a closed
    connection's error for ever."""
    url = new_database(kind)
    with _driver(url) as driver:
        driver.connect()
        assert driver.read_versions(VersionTable()) == ()
        victim = _server_id(driver)
        execute(url, f"SELECT pg_terminate_backend({victim})" if kind == "postgresql"
                else f"KILL {victim}")
        with pytest.raises(Exception) as lost:
            driver.read_versions(VersionTable())
        assert database.is_transient(lost.value)  # psycopg's AdminShutdown, say: retried
        assert driver.read_versions(VersionTable()) == ()
        assert _server_id(driver) != victim


@pytest.mark.parametrize(("kind", "query"), [
    ("postgresql", "foo=bar"), ("postgresql", "sslmode=bogus"),
    ("mysql", "foo=bar"), ("mysql", "charset=bogus"),
])
def test_connection_parameters_the_driver_refuses_are_exit_2_at_once(
        kind: str, query: str, new_database, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Not a database that is not up yet: retrying cannot fix a URL. Exit 2, naming the
    parameter's problem and the variable, before the wait timeout."""
    url = new_database(kind)
    project = copy_app(EXAMPLE, tmp_path / "app")
    result = run_runner(["migrate"], runner_env(f"{url}?{query}", RUNNER_WAIT_TIMEOUT="120"),
                        cwd=project)
    error = one_error(result, ExitCode.CONFIG)
    assert "connection parameters" in error["message"]
    assert "DATABASE_URL" in error["message"]
    assert "db.waiting" not in result.stderr


def test_a_lock_file_that_cannot_be_made_is_exit_2(tmp_path: Path) -> None:
    """SQLite's lock is a file beside the database: when it cannot be opened, say so and
    what to change (exit 2), not a wait for a database that is there."""
    project = copy_app(EXAMPLE, tmp_path / "app")
    database = tmp_path / "data" / "app.db"
    database.parent.mkdir()
    # A directory where the lock file goes.
    lock_path(str(database), lock_name(str(database), VersionTable())).mkdir()
    result = run_runner(["migrate"], runner_env(f"sqlite:///{database}"), cwd=project)
    error = one_error(result, ExitCode.CONFIG)
    assert "migration lock file" in error["message"]


def test_the_mysql_lock_connection_outlives_a_short_wait_timeout(mysql_url: str) -> None:
    """The lock's connection idles while the app's upgrade runs: the server's wait_timeout
    (often lowered by hosts) must not end it and free the lock mid-upgrade."""
    with _driver(mysql_url) as driver:
        driver.connect()
        with driver.scope():
            ((before,),) = driver.fetch("SELECT @@session.wait_timeout")
        assert driver.poll(None).taken
        with driver.scope():
            ((held,),) = driver.fetch("SELECT @@session.wait_timeout")
        assert int(held) >= 365 * 24 * 3600 > int(before)
        engine = sa.create_engine(mysql_url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as other:
                assert other.scalar(sa.text("SELECT @@session.wait_timeout")) == int(before)
        finally:
            engine.dispose()

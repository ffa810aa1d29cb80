"""Table-lock retries: which errors are retried, growing pauses, the budget, the setting."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pymysql
import pytest
import sqlalchemy as sa

from runner import log, upgrade
from runner.drivers import Driver, VersionTable, open_driver
from runner.errors import ConfigError, ExitCode, MigrationFailed
from runner.revisions import Migrations, load
from runner.settings import Settings, resolve
from runner.table_locks import (
    FIRST_PAUSE,
    MAX_PAUSE,
    TableLockTimeout,
    is_table_lock_timeout,
    upgrade_with_retries,
)
from support import EXAMPLE, clean_runner_environment


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_runner_environment(monkeypatch)
    monkeypatch.setenv("FLASK_APP", "app:create_app()")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'app.db'}")
    monkeypatch.chdir(EXAMPLE)
    monkeypatch.setattr(log.events, "format", "json")


@pytest.fixture
def migrations() -> Migrations:
    return load(resolve({}))


@pytest.fixture
def driver(tmp_path: Path) -> Driver:
    """The runner's connection to the test's SQLite file (never connected here)."""
    return open_driver(resolve({}).database_url, VersionTable(), 5)  # type: ignore[arg-type]


def retried(settings: Settings, migrations: Migrations, driver: Driver,
            attempt: object, sleep: object) -> tuple[str, ...]:
    return upgrade_with_retries(settings, migrations, driver, attempt, sleep)  # type: ignore[arg-type]


def failure(original: Exception, revision: str = "abc123") -> MigrationFailed:
    """What migrate.upgrade raises: a MigrationFailed caused by SQLAlchemy's wrapped error."""
    try:
        try:
            raise sa.exc.OperationalError("ALTER TABLE ...", {}, original)
        except sa.exc.OperationalError as error:
            raise MigrationFailed(f"revision {revision} failed", revision=revision) from error
    except MigrationFailed as raised:
        return raised


LOCK_NOT_AVAILABLE = psycopg.errors.LockNotAvailable("canceling statement due to lock timeout")
MYSQL_LOCK_WAIT = pymysql.err.OperationalError(1205, "Lock wait timeout exceeded")


def test_lock_timeouts_are_told_apart_from_other_errors() -> None:
    assert is_table_lock_timeout(failure(LOCK_NOT_AVAILABLE).__cause__)
    assert is_table_lock_timeout(failure(MYSQL_LOCK_WAIT).__cause__)
    # PyMySQL gives every error the generic SQLSTATE HY000: the error number decides.
    assert not is_table_lock_timeout(pymysql.err.OperationalError(1213, "Deadlock found"))
    assert not is_table_lock_timeout(psycopg.errors.UndefinedTable("no such table"))
    assert not is_table_lock_timeout(psycopg.errors.QueryCanceled("statement timeout"))
    assert not is_table_lock_timeout(ValueError("not a database error"))
    assert not is_table_lock_timeout(None)


def test_setting_defaults_to_5_seconds_and_0_is_accepted(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve({}).ddl_lock_timeout == 5
    monkeypatch.setenv("RUNNER_DDL_LOCK_TIMEOUT", "0")
    assert resolve({}).ddl_lock_timeout == 0
    assert resolve({"ddl_lock_timeout": "1.5"}).ddl_lock_timeout == 1.5
    monkeypatch.setenv("RUNNER_DDL_LOCK_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="RUNNER_DDL_LOCK_TIMEOUT"):
        resolve({})


def test_retries_with_growing_capped_pauses_until_it_succeeds(
    capsys: pytest.CaptureFixture[str], migrations: Migrations, driver: Driver
) -> None:
    settings = resolve({"lock_timeout": "3600"})
    sleeps: list[float] = []
    calls = []

    def upgrade() -> tuple[str, ...]:
        calls.append(1)
        if len(calls) <= 8:
            raise failure(LOCK_NOT_AVAILABLE)
        return ("abc123",)

    assert retried(settings, migrations, driver, upgrade, sleeps.append) == ("abc123",)
    assert len(sleeps) == 8
    assert FIRST_PAUSE <= sleeps[0] <= 2 * FIRST_PAUSE
    assert sleeps[0] < sleeps[3]
    assert all(pause <= MAX_PAUSE for pause in sleeps)
    assert sleeps[-1] >= MAX_PAUSE / 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "ddl.lock_timeout" in line]
    assert len(lines) == 8
    assert '"revision": "abc123"' in lines[0] and '"attempt": 1' in lines[0]


def test_out_of_budget_is_exit_4_naming_the_revision(
    migrations: Migrations, driver: Driver
) -> None:
    def upgrade() -> tuple[str, ...]:
        raise failure(LOCK_NOT_AVAILABLE, revision="def456")

    with pytest.raises(TableLockTimeout) as raised:
        # A budget already spent: the first attempt is the only one.
        retried(resolve({"lock_timeout": "0"}), migrations, driver, upgrade, lambda _: None)
    assert raised.value.exit_code == ExitCode.LOCK_TIMEOUT
    assert raised.value.event == "lock.timeout"
    assert raised.value.fields["revision"] == "def456"
    assert raised.value.fields["attempts"] == 1
    assert "def456" in raised.value.message and "table lock" in raised.value.message


def test_other_failures_are_not_retried(migrations: Migrations, driver: Driver) -> None:
    calls = []

    def upgrade() -> tuple[str, ...]:
        calls.append(1)
        raise failure(psycopg.errors.UndefinedTable("relation does not exist"))

    with pytest.raises(MigrationFailed):
        retried(resolve({}), migrations, driver, upgrade, lambda _: None)
    assert len(calls) == 1


def test_a_lock_timeout_before_the_first_revision_is_not_retried_as_a_connection_error(
    monkeypatch: pytest.MonkeyPatch, migrations: Migrations, driver: Driver
) -> None:
    """psycopg's LockNotAvailable and PyMySQL's 1205 are OperationalErrors ("transient"), but
    the table-lock path handles them (exit 4), without reading the state for the message."""
    settings = resolve({"lock_timeout": "0"})
    calls = []
    readings = []

    def run_upgrade(migrations: object) -> None:
        calls.append(1)
        raise sa.exc.OperationalError("ALTER TABLE ...", {}, LOCK_NOT_AVAILABLE)

    def not_a_connection_retry(delay: float) -> None:
        raise AssertionError("retried as 'database not ready'")

    def read_state(*args: object) -> None:  # _failure would swallow an exception
        readings.append(1)
        raise RuntimeError("read the state for a message table_locks discards")

    monkeypatch.setattr(upgrade, "run_upgrade", run_upgrade)
    monkeypatch.setattr(upgrade, "read_state", read_state)
    with pytest.raises(TableLockTimeout) as raised:
        retried(settings, migrations, driver,
                lambda: upgrade._upgrade_retrying(settings, migrations, driver,
                                                  not_a_connection_retry),
                lambda _: None)
    assert raised.value.exit_code == ExitCode.LOCK_TIMEOUT
    assert len(calls) == 1
    assert not readings

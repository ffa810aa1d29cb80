"""The retry policy: capped exponential backoff with jitter, permanent errors not retried."""

from __future__ import annotations

import time

import psycopg
import pymysql
import pytest
import sqlalchemy as sa

from runner import database, log, wait
from runner.drivers import VersionTable, open_driver
from runner.urls import parse_url


def refused_connection() -> psycopg.OperationalError:
    """A real driver error: the runner's psycopg connecting to a port where nothing listens."""
    driver = open_driver(parse_url("postgresql+psycopg://u@127.0.0.1:9/db"), VersionTable(), 5)
    try:
        driver.connect()
    except psycopg.OperationalError as error:
        return error
    finally:
        driver.close()
    raise AssertionError("port 9 accepted a connection")


def access_denied() -> sa.exc.OperationalError:
    """The error PyMySQL raises when the server refuses the credentials."""
    original = pymysql.err.OperationalError(1045, "Access denied for user 'x'@'localhost'")
    return sa.exc.OperationalError("connect", {}, original)


def test_transient_errors_back_off_exponentially_capped(capsys: pytest.CaptureFixture[str]) -> None:
    refused = refused_connection()
    assert not database.is_permanent(refused)
    sleeps: list[float] = []
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 12:
            raise refused
        return "connected"

    log.events.format = "json"
    assert wait.retry_policy(3600, sleep=sleeps.append)(flaky) == "connected"
    assert len(sleeps) == 11
    # Exponential at first, then capped at MAX_DELAY plus at most the jitter.
    assert sleeps[0] < sleeps[3]
    assert all(delay <= wait.MAX_DELAY + 0.2 for delay in sleeps)
    assert max(sleeps) >= wait.MAX_DELAY
    assert capsys.readouterr().err.count('"db.waiting"') == 11


def test_permanent_errors_are_not_retried() -> None:
    denied = access_denied()
    assert database.is_permanent(denied)
    sleeps: list[float] = []

    def refuse() -> None:
        raise denied

    with pytest.raises(sa.exc.OperationalError):
        wait.retry_policy(3600, sleep=sleeps.append)(refuse)
    assert sleeps == []


def test_deadline_ends_the_retries() -> None:
    refused = refused_connection()
    attempts = []

    def never() -> None:
        attempts.append(time.monotonic())
        raise refused

    with pytest.raises(psycopg.OperationalError):
        wait.retry_policy(0.3, sleep=lambda seconds: time.sleep(0.01))(never)
    assert len(attempts) >= 2
    # Retries that outlived the deadline would go on for good: an order of magnitude is
    # enough to tell (a loaded machine may pause this process for a while).
    assert attempts[-1] - attempts[0] < 0.3 * 10


def test_programming_errors_are_not_retried() -> None:
    sleeps: list[float] = []

    def bug() -> None:
        raise ValueError("not a connection problem")

    with pytest.raises(ValueError):
        wait.retry_policy(3600, sleep=sleeps.append)(bug)
    assert sleeps == []


def test_a_statement_error_is_not_a_connection_error() -> None:
    """Exit 3 is for the database failing us; a bad statement of ours is a bug (exit 1)."""
    assert database.is_connection_error(refused_connection())
    assert not database.is_connection_error(psycopg.errors.UndefinedTable("no such table"))
    assert not database.is_connection_error(
        sa.exc.ProgrammingError("SELECT", {}, pymysql.err.ProgrammingError(1146, "no table")))
    assert database.is_connection_error(
        sa.exc.OperationalError("connect", {}, pymysql.err.OperationalError(2003, "refused")))

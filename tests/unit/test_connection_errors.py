"""Which errors are the connection's (retried while the wait lasts) and which are not."""

from __future__ import annotations

import socket

import pytest

from runner import database


class OperationalError(Exception):
    """PEP 249's class, by its name, as every driver defines it."""


class AdminShutdown(OperationalError):
    """A driver's subclass of it (psycopg's for SQLSTATE 57P01)."""


@pytest.mark.parametrize("error", [
    ConnectionRefusedError(111, "Connection refused"), TimeoutError("timed out"),
    socket.gaierror(-2, "Name or service not known"), OperationalError("gone"),
    AdminShutdown("terminating connection due to administrator command"),
])
def test_errors_of_the_connection(error: Exception) -> None:
    assert database.is_connection_error(error)


@pytest.mark.parametrize("error", [
    FileNotFoundError(2, "No such file or directory"), PermissionError(13, "denied"),
    IsADirectoryError(21, "Is a directory"), ValueError("a bug"), KeyError("x"),
])
def test_errors_that_are_not_the_connection(error: Exception) -> None:
    """A file that cannot be opened or a bug is not a database that is not up yet."""
    assert not database.is_connection_error(error)
    assert not database.is_transient(error)


@pytest.mark.parametrize("error", [
    TypeError("Connection.__init__() got an unexpected keyword argument 'foo'"),
    AttributeError("'NoneType' object has no attribute 'encoding'"),
])
def test_a_driver_refusing_its_arguments_is_a_bad_parameter(error: Exception) -> None:
    assert database.is_bad_parameter(error)
    assert not database.is_transient(error)

"""What a database error means: not up yet, refused us, lost, or something else.

The errors come from any DB-API driver (the runner's bundled ones, the app's own), wrapped
by SQLAlchemy or not; PEP 249 names their classes, which is what is relied on here.
"""

from __future__ import annotations

import re
import socket
from typing import Any

CONNECT_TIMEOUT = 5
"""Each attempt must end well inside the wait deadline, so a black-holed host costs one
bounded attempt rather than the driver's default of minutes."""

# Server answers that will not change by retrying: wrong credentials, missing
# database, no access. PostgreSQL SQLSTATE classes 28 and 3D; MySQL error numbers.
_PERMANENT_MYSQL_ERRORS = {1044, 1045, 1049, 1698, 1251}
_PERMANENT_POSTGRESQL_MESSAGES = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "does not exist",
    "authentication failed",
    "permission denied",
    "no password supplied",
)

# Errors that mean the connection itself is gone (a restart, a failover, a network cut),
# not that a statement failed: PostgreSQL SQLSTATE classes 08 and 57P (shutdown);
# MySQL 2006 "server has gone away", 2013 "lost connection", 1053 "server shutdown".
_LOST_MYSQL_ERRORS = {1053, 2003, 2006, 2013, 2055}
_LOST_MESSAGES = (
    "server closed the connection",
    "terminating connection",
    "connection is closed",
    "the connection is lost",
    "consuming input failed",
    "sending query failed",
    "connection refused",
    "lost connection",
    "server has gone away",
)
_LIBPQ_INVALID = re.compile(r"invalid .*(option|value|number)")
"""libpq's own rejection of a connection parameter (it has no SQLSTATE)."""
_CONNECTION_ERROR_CLASSES = ("OperationalError", "InterfaceError")
"""PEP 249's classes for errors of the connection rather than of a statement."""

MYSQL_DRIVER_MODULES = ("pymysql", "MySQLdb", "mysql", "mariadb")
"""The top-level modules of the MySQL drivers SQLAlchemy offers."""


def attempt_timeout(deadline: float) -> float:
    """The connect timeout of one attempt within a wait of `deadline` seconds."""
    return min(CONNECT_TIMEOUT, max(deadline, 1.0))


def driver_error(error: BaseException) -> BaseException:
    """The driver's own exception behind a SQLAlchemy one (or `error` itself)."""
    return getattr(error, "orig", None) or error


def mysql_code(error: BaseException) -> int | None:
    """A MySQL driver's error number, if `error` is one."""
    original = driver_error(error)
    if type(original).__module__.split(".")[0] not in MYSQL_DRIVER_MODULES:
        return None
    code = getattr(original, "errno", None)
    args: tuple[Any, ...] = getattr(original, "args", ())
    if not isinstance(code, int) and args and isinstance(args[0], int):
        code = args[0]
    return code if isinstance(code, int) else None


def sqlstate(error: BaseException) -> str:
    """A PostgreSQL driver's SQLSTATE (psycopg 3 `sqlstate`, psycopg2 `pgcode`), or ''."""
    original = driver_error(error)
    return str(getattr(original, "sqlstate", None) or getattr(original, "pgcode", None) or "")


def _postgresql(error: BaseException) -> bool:
    return type(driver_error(error)).__module__.startswith(("psycopg", "pg8000"))


def is_bad_parameter(error: BaseException) -> bool:
    """Whether connecting failed on the connect arguments (the URL's query parameters): a
    Python error of the driver's, or libpq's "invalid ... option/value/number"."""
    if isinstance(error, (TypeError, ValueError, AttributeError, LookupError)):
        return True
    return _postgresql(error) and not sqlstate(error) and bool(
        _LIBPQ_INVALID.search(str(driver_error(error))))


def is_permanent(error: BaseException) -> bool:
    """Whether a connection error is the server refusing us, which retrying will not fix."""
    original = driver_error(error)
    if is_bad_parameter(error):
        return True
    if mysql_code(error) is not None:
        return mysql_code(error) in _PERMANENT_MYSQL_ERRORS
    if _postgresql(error):
        state = sqlstate(error)
        if state:
            return state.startswith(("28", "3D", "42501"))
        text = str(original).lower()
        return any(marker in text for marker in _PERMANENT_POSTGRESQL_MESSAGES)
    # A SQLite file that cannot be opened stays unopenable: a path or permission problem.
    return type(original).__module__.startswith("sqlite3")


def is_connection_lost(error: BaseException) -> bool:
    """Whether an error raised mid-upgrade means the database went away, not a bad statement."""
    if getattr(error, "connection_invalidated", False):
        return True
    code = mysql_code(error)
    if code is not None:
        return code in _LOST_MYSQL_ERRORS
    if sqlstate(error).startswith(("08", "57P")):
        return True
    text = str(driver_error(error)).lower()
    return _postgresql(error) and any(marker in text for marker in _LOST_MESSAGES)


def is_connection_error(error: BaseException) -> bool:
    """Whether `error` is about the connection (PEP 249's OperationalError and
    InterfaceError, or the network's), not about a statement or a file."""
    if isinstance(error, (ConnectionError, TimeoutError, socket.gaierror)):
        return True
    # By the class or a base's name (psycopg's AdminShutdown is an OperationalError).
    return any(base.__name__ in _CONNECTION_ERROR_CLASSES
               for candidate in (error, driver_error(error))
               for base in type(candidate).__mro__)


def is_transient(error: BaseException) -> bool:
    """Whether retrying may succeed: the connection failed or broke, not a refusal."""
    return is_connection_error(error) and not is_permanent(error)


_ALREADY_EXISTS_STATES = ("42P07", "42710")
"""PostgreSQL: duplicate_table, duplicate_object."""
_ALREADY_EXISTS_MYSQL = {1050, 1061}
"""MySQL: table exists, duplicate key name."""


def is_already_exists(error: BaseException) -> bool:
    """Whether `error` is a CREATE that lost a race: the table (or its type or sequence, in
    PostgreSQL's pg_type and pg_class unique indexes: 23505) exists since another session
    made it."""
    state = sqlstate(error)
    if state in _ALREADY_EXISTS_STATES:
        return True
    if state == "23505" and any(index in str(driver_error(error)) for index in (
            "pg_type_typname_nsp_index", "pg_class_relname_nsp_index")):
        return True
    return mysql_code(error) in _ALREADY_EXISTS_MYSQL


def error_text(error: BaseException) -> str:
    """The driver's own message on one line, without SQLAlchemy's background link."""
    original = driver_error(error)
    text = " ".join(str(original).split())
    return text or type(original).__name__

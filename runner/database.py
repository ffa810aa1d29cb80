"""The runner's own connections: one engine per use, no pool, a bounded connect timeout."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import URL

# Each attempt must end well inside the wait deadline, so a black-holed host
# costs one bounded attempt rather than the driver's default of minutes.
CONNECT_TIMEOUT = 5

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


def attempt_timeout(deadline: float) -> float:
    """The connect timeout of one attempt within a wait of `deadline` seconds."""
    return min(CONNECT_TIMEOUT, max(deadline, 1.0))


def driver_connect_timeout(backend: str, timeout: float) -> float:
    """The driver's connect timeout for `timeout` seconds: whole seconds for libpq (which
    rounds below 2 up to 2) and PyMySQL (at least 1); as given for sqlite3."""
    if backend == "postgresql":
        return max(2, int(timeout))
    if backend in ("mysql", "mariadb"):
        return max(1, int(timeout))
    return timeout


def create_engine(
    url: URL,
    connect_timeout: float = CONNECT_TIMEOUT,
    extra_connect_args: dict[str, Any] | None = None,
) -> sa.Engine:
    """An engine with no pool whose connect() gives up after `connect_timeout` seconds."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    connect_args: dict[str, Any] = dict(extra_connect_args or {})
    backend = url.get_backend_name()
    timeout = driver_connect_timeout(backend, connect_timeout)
    connect_args["timeout" if backend == "sqlite" else "connect_timeout"] = timeout
    return sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)


def is_permanent(error: BaseException) -> bool:
    """Whether a connection error is the server refusing us, which retrying will not fix."""
    original = getattr(error, "orig", None) or error
    module = type(original).__module__
    if module.startswith("pymysql"):
        args: tuple[Any, ...] = getattr(original, "args", ())
        return bool(args) and args[0] in _PERMANENT_MYSQL_ERRORS
    if module.startswith("psycopg"):
        sqlstate = getattr(original, "sqlstate", None)
        if sqlstate:
            return str(sqlstate).startswith(("28", "3D", "42501"))
        text = str(original).lower()
        return any(marker in text for marker in _PERMANENT_POSTGRESQL_MESSAGES)
    # A SQLite file that cannot be opened stays unopenable: a path or permission problem.
    return module.startswith("sqlite3")


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


def is_connection_lost(error: BaseException) -> bool:
    """Whether an error raised mid-upgrade means the database went away, not a bad statement."""
    if getattr(error, "connection_invalidated", False):
        return True
    original = getattr(error, "orig", None) or error
    module = type(original).__module__
    if module.startswith("pymysql"):
        args: tuple[Any, ...] = getattr(original, "args", ())
        return bool(args) and args[0] in _LOST_MYSQL_ERRORS
    sqlstate = str(getattr(original, "sqlstate", None) or "")
    if sqlstate.startswith(("08", "57P")):
        return True
    text = str(original).lower()
    return module.startswith("psycopg") and any(marker in text for marker in _LOST_MESSAGES)


def is_transient(error: BaseException) -> bool:
    """Whether retrying may succeed: the connection failed or broke, not a refusal."""
    return isinstance(error, _connection_errors()) and not is_permanent(error)


def _connection_errors() -> tuple[type[BaseException], ...]:
    """OSError, and the connection errors of SQLAlchemy and of the bare drivers (the fast
    path's) among the modules already imported: one never imported raised nothing."""
    found: list[type[BaseException]] = [OSError]
    for module in ("sqlalchemy.exc", "psycopg", "pymysql.err"):
        if module in sys.modules:
            found += [sys.modules[module].OperationalError, sys.modules[module].InterfaceError]
    return tuple(found)


def error_text(error: BaseException) -> str:
    """The driver's own message on one line, without SQLAlchemy's background link."""
    original = getattr(error, "orig", None) or error
    text = " ".join(str(original).split())
    return text or type(original).__name__

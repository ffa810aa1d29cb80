"""The runner's own connections: one engine per use, no pool, a bounded connect timeout."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

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


def create_engine(url: URL, connect_timeout: float = CONNECT_TIMEOUT) -> sa.Engine:
    """An engine with no pool whose connect() gives up after `connect_timeout` seconds."""
    connect_args: dict[str, Any] = {}
    backend = url.get_backend_name()
    if backend == "postgresql":
        # libpq rounds below 2 up to 2 seconds.
        connect_args["connect_timeout"] = max(2, int(connect_timeout))
    elif backend in ("mysql", "mariadb"):
        connect_args["connect_timeout"] = max(1, int(connect_timeout))
    elif backend == "sqlite":
        connect_args["timeout"] = connect_timeout
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


def error_text(error: BaseException) -> str:
    """The driver's own message on one line, without SQLAlchemy's background link."""
    original = getattr(error, "orig", None) or error
    text = " ".join(str(original).split())
    return text or type(original).__name__

"""Database URLs as users and platforms write them, made to name a driver that is installed."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from runner.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

# The driver SQLAlchemy picks for a scheme without one, the driver to use when that one is
# missing, and the pip package that provides the default.
_POSTGRESQL_DEFAULT = "psycopg2"
_MYSQL_DEFAULT = "MySQLdb"

DRIVER_PACKAGES = {
    "psycopg2": "psycopg2-binary",
    "psycopg": "psycopg[binary]",
    "MySQLdb": "mysqlclient",
    "pymysql": "PyMySQL",
    "pg8000": "pg8000",
    "asyncpg": "asyncpg",
    "mysql": "mysql-connector-python",
    "mariadb": "mariadb",
    "oracledb": "oracledb",
    "cx_Oracle": "cx_Oracle",
    "pyodbc": "pyodbc",
    "pymssql": "pymssql",
}
"""The pip package that provides each database driver module, for "install X" hints."""


def normalize_url(url: URL) -> URL:
    """`url` naming an installed driver: psycopg 3 or PyMySQL where the scheme's default is absent.

    `postgres://` (Heroku) and `postgresql://` stay on psycopg2 when it is installed and use
    psycopg 3 otherwise; `mysql://` and `mariadb://` stay on mysqlclient when it is installed
    and use PyMySQL otherwise. A URL that names a driver, or another database, is unchanged.
    """
    if "+" in url.drivername:
        return url
    if url.drivername in ("postgres", "postgresql"):
        if _installed(_POSTGRESQL_DEFAULT):
            return url.set(drivername="postgresql")
        if not _installed("sqlalchemy.dialects.postgresql.psycopg"):
            # SQLAlchemy 1.4 has no psycopg 3 dialect: psycopg2 is the only way there.
            raise ConfigError(
                f"the database URL's {url.drivername}:// needs psycopg2 with this SQLAlchemy"
                f" (no psycopg 3 dialect before SQLAlchemy 2.0): pip install"
                f" {DRIVER_PACKAGES[_POSTGRESQL_DEFAULT]}, or upgrade SQLAlchemy"
            )
        return url.set(drivername="postgresql+psycopg")
    if url.drivername in ("mysql", "mariadb") and not _installed(_MYSQL_DEFAULT):
        return url.set(drivername=f"{url.drivername}+pymysql")
    return url


def _installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False

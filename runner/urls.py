"""Database URLs: the one parser, as SQLAlchemy splits them, without importing SQLAlchemy.

The runner reads its URL before Flask or SQLAlchemy is loaded (importing
sqlalchemy.engine.url alone costs about as much CPU as a whole no-op start), so this
module splits a URL exactly as `sqlalchemy.engine.make_url` does (tests compare the two)
and renders it as `URL.render_as_string` does. It also gives a URL written by users and
platforms (`postgres://`, `mysql://`) a driver that is installed.
"""

from __future__ import annotations

import importlib.util
import re
import urllib.parse
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from runner.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

# sqlalchemy.engine.url._parse_url's pattern.
_URL = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
    """,
    re.X,
)

DEFAULT_DRIVERS = {"postgresql": "psycopg2", "mysql": "mysqldb", "mariadb": "mysqldb",
                   "sqlite": "pysqlite"}
"""The driver SQLAlchemy uses for a scheme that names none."""

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
    "pkg_resources": "setuptools",
}
"""The pip package that provides a module, for "install X" hints."""


@dataclass(frozen=True)
class DatabaseUrl:
    """A database URL, split as SQLAlchemy splits it; `describe()` never shows the password."""

    drivername: str
    """`dialect` or `dialect+driver`, as written (lowercase scheme)."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    host: str | None = None
    port: int | None = None
    database: str | None = None
    query: tuple[tuple[str, str], ...] = ()

    @property
    def backend(self) -> str:
        """The dialect: postgresql, mysql, mariadb, sqlite, ... (`postgres` is postgresql)."""
        dialect = self.drivername.split("+", 1)[0]
        return "postgresql" if dialect == "postgres" else dialect

    @property
    def driver(self) -> str:
        """The DBAPI driver, named as SQLAlchemy names it (its default when none is given)."""
        if "+" in self.drivername:
            return self.drivername.split("+", 1)[1]
        return DEFAULT_DRIVERS.get(self.backend, "")

    def render(self, hide_password: bool = False) -> str:
        """The URL as text, as `URL.render_as_string` writes it."""
        quote = urllib.parse.quote
        text = self.drivername + "://"
        if self.username is not None:
            text += quote(self.username, safe=" +")
            if self.password is not None:
                text += ":" + ("***" if hide_password else quote(self.password, safe=" +"))
            text += "@"
        if self.host is not None:
            text += f"[{self.host}]" if ":" in self.host else self.host
        if self.port is not None:
            text += f":{self.port}"
        if self.database is not None:
            text += "/" + quote(self.database, safe=" +/")
        if self.query:
            plus = urllib.parse.quote_plus
            text += "?" + "&".join(f"{plus(key)}={plus(value)}"
                                   for key, value in sorted(self.query, key=lambda kv: kv[0]))
        return text

    def describe(self) -> str:
        """The URL with its password hidden, for logs and errors."""
        return self.render(hide_password=True)

    def with_driver(self, driver: str | None) -> DatabaseUrl:
        """This URL with another driver (None: the dialect's default)."""
        dialect = self.drivername.split("+", 1)[0]
        return replace(self, drivername=f"{dialect}+{driver}" if driver else dialect)

    @property
    def relative_file(self) -> bool:
        """A SQLite file named by a relative path: Flask-SQLAlchemy puts it in the app's
        instance folder, which only the app (or its manifest) knows."""
        return (self.backend == "sqlite" and self.database not in (None, "", ":memory:")
                and not Path(self.database or "").is_absolute())

    def in_folder(self, folder: str) -> DatabaseUrl:
        """This URL, a relative SQLite file put in `folder` as Flask-SQLAlchemy puts it."""
        if not self.relative_file:
            return self
        return replace(self, database=str(Path(folder) / (self.database or "")))

    def same_database(self, other: DatabaseUrl) -> bool:
        """Whether both name one database on one server, as one user (drivers aside)."""
        def identity(url: DatabaseUrl) -> tuple[object, ...]:
            return (url.backend, url.host, url.port, url.database, url.username)

        return identity(self) == identity(other)

    @classmethod
    def from_sqlalchemy(cls, url: URL) -> DatabaseUrl:
        """The same URL as SQLAlchemy's `URL` (an engine's, say)."""
        return parse_url(url.render_as_string(hide_password=False))


def parse_url(text: str, source: str = "the database URL") -> DatabaseUrl:
    """Split `text` as `sqlalchemy.engine.make_url` does; ConfigError naming `source` (and
    never the password) when it is not a URL."""
    text = text.strip()  # a *_FILE often ends with a newline
    match = _URL.match(text)
    if match is None or match.end() != len(text):
        raise _not_a_url(text, source)
    parts = match.groupdict()
    port: int | None = None
    if parts["port"]:
        if not parts["port"].isdigit():
            raise _not_a_url(text, source)
        port = int(parts["port"])
    unquote = urllib.parse.unquote
    return DatabaseUrl(
        drivername=parts["name"].lower(),
        username=None if parts["username"] is None else unquote(parts["username"]),
        password=None if parts["password"] is None else unquote(parts["password"]),
        host=parts["ipv4host"] or parts["ipv6host"],
        port=port,
        database=None if parts["database"] is None else unquote(parts["database"]),
        query=tuple(urllib.parse.parse_qsl(parts["query"] or "")),
    )


def written_password(text: str) -> str | None:
    """The password in a URL as written, for masking: everything between the first ':' of
    the user information and the last '@', so that an unencoded '@', ':' or '/' in it
    cannot cut it short; None when there is none. Works on text that does not parse."""
    if "://" not in text:
        return None
    rest = text.split("://", 1)[1]
    if "@" not in rest:
        return None
    userinfo = rest[: rest.rindex("@")]
    return userinfo.split(":", 1)[1] if ":" in userinfo else None


def _not_a_url(text: str, source: str) -> ConfigError:
    # The text may hold a password: name its scheme only.
    scheme = text.split("://", 1)[0] if "://" in text else "(none)"
    return ConfigError(f"{source} is not a database URL (scheme {scheme!r}): expected"
                       " dialect+driver://user:password@host:port/database")


def normalize_url(url: DatabaseUrl, source: str = "the database URL") -> DatabaseUrl:
    """`url` naming an installed driver: psycopg 3 or PyMySQL where the scheme's default is absent.

    `postgres://` (Heroku) and `postgresql://` stay on psycopg2 when it is installed and use
    psycopg 3 otherwise; `mysql://` and `mariadb://` stay on mysqlclient when it is installed
    and use PyMySQL otherwise. A URL that names a driver, or another database, is unchanged.
    """
    if "+" in url.drivername:
        return url
    if url.backend == "postgresql":
        if installed("psycopg2"):
            return replace(url, drivername="postgresql")
        if not installed("sqlalchemy.dialects.postgresql.psycopg"):
            # SQLAlchemy 1.4 has no psycopg 3 dialect: psycopg2 is the only way there.
            raise ConfigError(
                f"{source}'s {url.drivername}:// needs psycopg2 with this SQLAlchemy (no"
                f" psycopg 3 dialect before SQLAlchemy 2.0): pip install"
                f" {DRIVER_PACKAGES['psycopg2']}, or upgrade SQLAlchemy"
            )
        return replace(url, drivername="postgresql+psycopg")
    if url.backend in ("mysql", "mariadb") and not installed("MySQLdb"):
        return url.with_driver("pymysql")
    return url


def installed(module: str) -> bool:
    """Whether `module` can be imported, without importing it (nor its parent packages,
    which find_spec would import: SQLAlchemy's dialects cost a start's whole budget)."""
    top, _, rest = module.partition(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    if spec is None or not rest:
        # A bare folder of that name on sys.path (a namespace package) is no driver.
        return spec is not None and spec.origin is not None
    for folder in spec.submodule_search_locations or ():
        path = Path(folder, *rest.split("."))
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return True
    return False

"""Decide "the database is at head" without Flask, Alembic, SQLAlchemy or the app.

The fast no-op path: the URL as text, the scripts' heads from the revision files' text
(`runner.script_heads`), and one `SELECT version_num` with the bare driver. It only ever
says "at head" when the full path (the app's env.py through Alembic) would; on any doubt it
says "not certain" and the caller takes the full path. Drivers are imported lazily, and
only the one the URL names.
"""

from __future__ import annotations

import ast
import importlib.machinery
import os
import re
import sys
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.database import CONNECT_TIMEOUT, driver_connect_timeout
from runner.script_heads import read_heads

DEFAULT_VERSION_TABLE = "alembic_version"

# SQLAlchemy's own URL pattern (sqlalchemy.engine.url._parse_url), so the text splits
# exactly as make_url splits it; tests compare the two. Importing sqlalchemy.engine.url
# costs about 150 ms of CPU, half of the fast path's whole budget.
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
# The schemes whose connection the bare driver makes as the app's engine would, and the
# backend each means. Another driver (asyncpg, mysqlclient options, ...) is a doubt.
_BACKENDS = {
    "postgres": "postgresql",
    "postgresql": "postgresql",
    "postgresql+psycopg": "postgresql",
    "postgresql+psycopg2": "postgresql",
    "mysql": "mysql",
    "mysql+pymysql": "mysql",
    "mariadb": "mariadb",
    "mariadb+pymysql": "mariadb",
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
}
# Query parameters passed through unchanged to the driver's connect(), as SQLAlchemy's
# dialects pass them. Any other parameter is a doubt.
_PASSED_QUERY = {
    "postgresql": frozenset({"sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl",
                             "target_session_attrs", "application_name", "connect_timeout"}),
    "mysql": frozenset({"charset"}),
    "mariadb": frozenset({"charset"}),
    "sqlite": frozenset(),
}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# env.py must take its connection from the app's Flask-SQLAlchemy engine and configure
# Alembic with the Migrate extension's arguments, as Flask-Migrate's env.py does...
_ENV_REQUIRED = ("current_app.extensions['migrate'].db", "**conf_args", "context.configure(")
# ...and do nothing that could move the version table or add a database.
_ENV_FORBIDDEN = (
    "version_table", "bind_names", "get_engine(bind", "SQLALCHEMY_BINDS", "bind_key",
    "set_section_option", "create_engine", "engine_from_config", "schema_translate_map",
    "search_path", "get_x_argument", "os.environ", "getenv", "tenant",
)


DEFAULT_APP_FILES = ("wsgi.py", "app.py")
"""Where `flask` looks when FLASK_APP is unset, in order (runner.discovery uses it too)."""
APP_SEPARATOR = re.compile(r":(?![\\/])")
"""What splits FLASK_APP into module and expression, as flask.cli does (a Windows drive's
colon is no separator)."""
_APP_FILES_LIMIT = 500
"""Past this many files in the app's package, reading them costs more than it saves."""
_VERSION_TABLE_ARGUMENTS = frozenset({"version_table", "version_table_schema"})


@dataclass(frozen=True)
class DriverTarget:
    """Where the bare driver connects: the backend and its connect() keyword arguments."""

    backend: str
    params: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class FastVerdict:
    """The fast path's answer: `at_head` only when certain; `reason` says why, for logs."""

    at_head: bool
    reason: str


def parse_url(text: str) -> DriverTarget | None:
    """The bare driver's connection for a URL as users write it, or None when not certain."""
    text = text.strip()  # a *_FILE often ends with a newline
    match = _URL.match(text)
    if match is None or match.end() != len(text):
        return None
    parts = match.groupdict()
    backend = _BACKENDS.get(parts["name"].lower())
    if backend is None:
        return None
    query: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(parts["query"] or ""):
        if key not in _PASSED_QUERY[backend] or key in query:
            return None
        query[key] = value
    username, password, database = (
        urllib.parse.unquote(parts[key]) if parts[key] is not None else None
        for key in ("username", "password", "database")
    )
    host = parts["ipv4host"] or parts["ipv6host"]
    port: int | None = None
    if parts["port"]:
        if not parts["port"].isdigit():
            return None
        port = int(parts["port"])
    if backend == "sqlite":
        # Flask-SQLAlchemy makes a relative path relative to the app's instance folder,
        # which only the app knows; a memory database is never at head.
        if username or password or host or port or not database or not database.startswith("/"):
            return None
        return DriverTarget(backend, {"path": database})
    params: dict[str, Any] = {"host": host, "port": port, "user": username,
                              "password": password}
    params["dbname" if backend == "postgresql" else "database"] = database or None
    params.update(query)
    return DriverTarget(backend, {key: value for key, value in params.items()
                                  if value is not None})


def read_version_rows(
    target: DriverTarget,
    version_table: str = DEFAULT_VERSION_TABLE,
    version_table_schema: str | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> tuple[str, ...] | None:
    """The revisions in the version table; () when there is no table; None on any error."""
    try:
        return query_version_rows(target, version_table, version_table_schema, connect_timeout)
    except Exception:  # any error is a doubt: the full path reads it again and says what
        return None


def query_version_rows(
    target: DriverTarget,
    version_table: str = DEFAULT_VERSION_TABLE,
    version_table_schema: str | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> tuple[str, ...] | None:
    """As read_version_rows, but the driver's errors are raised (the wait retries them)."""
    query = version_query(version_table, version_table_schema)
    if query is None:
        return None
    if target.backend == "sqlite":
        return _read_sqlite(target.params["path"], query, connect_timeout)
    connection = connect(target, connect_timeout)
    if connection is None:
        return None
    try:
        return read_rows(target, connection, query)
    finally:
        connection.close()


def version_query(
    version_table: str = DEFAULT_VERSION_TABLE, version_table_schema: str | None = None
) -> str | None:
    """The SELECT that reads the version table; None for a name that needs quoting."""
    if not _IDENTIFIER.match(version_table) or (
        version_table_schema is not None and not _IDENTIFIER.match(version_table_schema)
    ):
        return None
    table = f"{version_table_schema}.{version_table}" if version_table_schema else version_table
    return f"SELECT version_num FROM {table}"


def connect(target: DriverTarget, connect_timeout: float = CONNECT_TIMEOUT,
            **extra: Any) -> Any | None:
    """The bare driver's autocommit connection to a PostgreSQL or MySQL/MariaDB target, with
    `extra` connect() arguments; None when the server is not one the URL's dialect accepts.

    Autocommit, so that each reading sees what others committed since the last one.
    """
    if target.backend == "postgresql":
        import psycopg

        return psycopg.connect(autocommit=True, **{
            "connect_timeout": driver_connect_timeout(target.backend, connect_timeout),
            **target.params, **extra})
    import pymysql  # type: ignore[import-untyped]

    timeout = driver_connect_timeout(target.backend, connect_timeout)
    connection = pymysql.connect(connect_timeout=timeout, read_timeout=timeout,
                                 write_timeout=timeout, autocommit=True,
                                 **target.params, **extra)
    # SQLAlchemy's mariadb:// dialect refuses a server that is not MariaDB.
    if target.backend == "mariadb" and "mariadb" not in connection.get_server_info().lower():
        connection.close()
        return None
    return connection


def fetch_all(connection: Any, query: str,
              params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """The rows of `query` (with `%(name)s` parameters) on a bare DB-API connection."""
    cursor = connection.cursor()
    try:
        cursor.execute(query, params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def read_rows(target: DriverTarget, connection: Any, query: str) -> tuple[str, ...]:
    """The revisions `query` reads from the version table; () when there is no table."""
    if target.backend == "postgresql":
        from psycopg import errors

        try:
            rows = fetch_all(connection, query)
        except errors.UndefinedTable:
            return ()
    else:
        import pymysql

        try:
            rows = fetch_all(connection, query)
        except pymysql.err.ProgrammingError as error:
            if error.args and error.args[0] == 1146:  # ER_NO_SUCH_TABLE
                return ()
            raise
    return tuple(str(row[0]) for row in rows)


def describe_target(target: DriverTarget) -> str:
    """Where the bare driver connects, for logs: never the password."""
    params = target.params
    if target.backend == "sqlite":
        return f"sqlite:///{params['path']}"
    user = f"{params['user']}@" if "user" in params else ""
    host = params.get("host", "")
    host = f"[{host}]" if ":" in host else host
    port = f":{params['port']}" if "port" in params else ""
    database = params.get("dbname", params.get("database", ""))
    return f"{target.backend}://{user}{host}{port}/{database}"


def env_py_doubt(migrations_directory: Path) -> str | None:
    """Why env.py may not migrate one database through `alembic_version`, or None."""
    try:
        text = (migrations_directory / "env.py").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return "env.py cannot be read"
    text = text.replace('"', "'")
    missing = [marker for marker in _ENV_REQUIRED if marker not in text]
    if missing:
        return f"env.py is not Flask-Migrate's (no {missing[0]!r})"
    found = [marker for marker in _ENV_FORBIDDEN if marker in text]
    if found:
        return f"env.py may use several databases or another version table ({found[0]!r})"
    return None


@dataclass(frozen=True)
class FastPlan:
    """What the fast path reads, and the single head the version table must hold."""

    target: DriverTarget
    head: str


def prepare(url_text: str | None, migrations_directory: Path | None) -> FastPlan | FastVerdict:
    """The reading to make, or (without connecting) the verdict "not certain" and why."""
    if url_text is None or migrations_directory is None:
        return FastVerdict(False, "the URL or the migrations directory is known only to the app")
    target = parse_url(url_text)
    if target is None:
        return FastVerdict(False, "the URL is not one the bare driver reads as the app would")
    doubt = env_py_doubt(migrations_directory)
    if doubt is not None:
        return FastVerdict(False, doubt)
    heads = read_heads(migrations_directory)
    if heads is None:
        return FastVerdict(False, "a revision file or the history cannot be read with certainty")
    if len(heads) != 1:
        return FastVerdict(False, f"the scripts have {len(heads)} heads")
    return FastPlan(target, heads[0])


def judge(plan: FastPlan, rows: tuple[str, ...] | None) -> FastVerdict:
    """Whether the version table's `rows` are exactly the plan's head."""
    if rows is None:
        return FastVerdict(False, "the version table could not be read")
    if set(rows) != {plan.head}:
        current = ", ".join(rows) or "base"
        return FastVerdict(False, f"the database is at {current}, the scripts at {plan.head}")
    return FastVerdict(True, f"the database is at head {plan.head}")


def app_source_doubt(app_path: str | None) -> str | None:
    """Why the app may give Migrate a version table of its own, or None.

    `Migrate(app, db, version_table=...)` reaches env.py through `**conf_args`, invisible
    in env.py: the app's module or package (FLASK_APP, found as flask.cli finds it, without
    importing it) must pass no `version_table`/`version_table_schema` argument, nor
    arguments to `Migrate` or `init_app` through `**`.
    """
    sources = _app_sources(app_path)
    if sources is None:
        return "the app's source cannot be found without importing it"
    for path in sources:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return f"the app's source {path.name} cannot be read"
        if "version_table" not in text and "**" not in text:
            continue
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            return f"the app's source {path.name} cannot be parsed"
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _may_set_version_table(node):
                return f"the app may give Migrate a version table ({path.name}:{node.lineno})"
    return None


def _may_set_version_table(call: ast.Call) -> bool:
    if any(keyword.arg in _VERSION_TABLE_ARGUMENTS for keyword in call.keywords):
        return True
    name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(
        call.func, "id", None)
    return name in ("Migrate", "init_app") and any(
        keyword.arg is None for keyword in call.keywords)


def _app_sources(app_path: str | None) -> list[Path] | None:
    """The files of the module or package FLASK_APP names, as flask.cli.prepare_import
    resolves it; None when they cannot be found without importing anything."""
    if app_path is None:
        found = [Path(name) for name in DEFAULT_APP_FILES if Path(name).is_file()]
        return found or None
    path = Path(os.path.realpath(APP_SEPARATOR.split(app_path, maxsplit=1)[0]))
    if path.suffix == ".py":
        path = path.with_suffix("")
    if path.name == "__init__":
        path = path.parent
    while (path.parent / "__init__.py").is_file():
        path = path.parent
    spec = importlib.machinery.PathFinder.find_spec(path.name.split(".")[0],
                                                    [str(path.parent), *sys.path])
    if spec is None or spec.origin is None:
        return None
    if spec.submodule_search_locations:
        files: list[Path] = []
        for location in spec.submodule_search_locations:
            files.extend(Path(location).rglob("*.py"))
            if len(files) > _APP_FILES_LIMIT:
                return None
        return files
    origin = Path(spec.origin)
    return [origin] if origin.suffix == ".py" else None


def decide(
    url_text: str | None,
    migrations_directory: Path | None,
    version_table: str = DEFAULT_VERSION_TABLE,
    version_table_schema: str | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> FastVerdict:
    """Whether the database is certainly at the scripts' single head, and why (not).

    `url_text` is the URL from the flag, the environment or a *_FILE, None when only the
    app's config knows it; `migrations_directory` likewise. Not certain means: take the
    full path, which also decides every error (several heads: exit 6; a revision the scripts
    do not know: exit 6 or RUNNER_ALLOW_NEWER_DATABASE).
    """
    plan = prepare(url_text, migrations_directory)
    if isinstance(plan, FastVerdict):
        return plan
    return judge(plan, read_version_rows(plan.target, version_table, version_table_schema,
                                         connect_timeout))


def fast_at_head(url_text: str | None, migrations_directory: Path | None) -> bool:
    """True only when the full path would certainly say "at head"; False means: take it."""
    return decide(url_text, migrations_directory).at_head


def _read_sqlite(path: str, query: str, connect_timeout: float) -> tuple[str, ...]:
    import sqlite3

    if not Path(path).exists():
        return ()  # the full path creates the file, then migrates it from base
    uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
    connection = sqlite3.connect(uri, uri=True, timeout=connect_timeout)
    try:
        try:
            rows = connection.execute(query).fetchall()
        except sqlite3.OperationalError as error:
            if str(error).startswith("no such table"):
                return ()
            raise
        return tuple(str(row[0]) for row in rows)
    finally:
        connection.close()

"""The fast path's URL reading agrees with make_url, and each doubt sends to the full path."""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from runner.fastpath import decide, env_py_doubt, parse_url
from support import EXAMPLE

USER_WRITTEN = [
    "postgresql+psycopg://app:s3cret@db.example.com:5432/app",
    "postgres://app:p%40ss%3Aw%2Frd%25@db:6543/app_prod",
    "postgresql://app@127.0.0.1/app?sslmode=require",
    "postgresql+psycopg://app:pw@[::1]:5432/app?sslmode=verify-full&sslrootcert=/ca.pem",
    "postgresql://app:pw@db/app?application_name=web&target_session_attrs=read-write",
    "postgresql+psycopg2://u:pw@db/app",
    "mysql+pymysql://root:@127.0.0.1:3306/app",
    "mysql://app:p%40ss@db/app?charset=utf8mb4",
    "mariadb://app:pw@db:3307/app",
    "mariadb+pymysql://app:pw@db/app",
    "sqlite:////var/lib/app/app.db",
    "sqlite+pysqlite:////srv/data/my%20app.db",
    "  postgresql://app:pw@db/app\n",  # a *_FILE with a trailing newline
]


def components(url_text: str) -> dict[str, object]:
    url = make_url(url_text.strip())
    return {"host": url.host, "port": url.port, "user": url.username,
            "password": url.password, "database": url.database, **url.query}


def target_components(url_text: str) -> dict[str, object]:
    target = parse_url(url_text)
    assert target is not None, url_text
    params = dict(target.params)
    if target.backend == "sqlite":
        return {"host": None, "port": None, "user": None, "password": None,
                "database": params["path"]}
    database = params.pop("dbname" if target.backend == "postgresql" else "database", None)
    return {"host": params.pop("host", None), "port": params.pop("port", None),
            "user": params.pop("user", None), "password": params.pop("password", None),
            "database": database, **params}


@pytest.mark.parametrize("url_text", USER_WRITTEN)
def test_urls_users_write_split_as_make_url_splits_them(url_text: str) -> None:
    assert target_components(url_text) == components(url_text)


def test_schemes_name_their_backend() -> None:
    backends = [parse_url(url).backend for url in USER_WRITTEN]  # type: ignore[union-attr]
    assert backends == ["postgresql"] * 6 + ["mysql"] * 2 + ["mariadb"] * 2 + ["sqlite"] * 2 + [
        "postgresql"]


@given(
    user=st.text(min_size=1, max_size=12),
    password=st.text(max_size=16),
    host=st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True),
    port=st.integers(1, 65535) | st.none(),
    database=st.text(min_size=1, max_size=12),
    scheme=st.sampled_from(["postgresql+psycopg", "postgres", "mysql+pymysql", "mariadb"]),
)
def test_any_percent_encoded_url_splits_as_make_url_splits_it(
    user: str, password: str, host: str, port: int | None, database: str, scheme: str
) -> None:
    def quote(text: str) -> str:
        return urllib.parse.quote(text, safe="")

    netloc = f"{quote(user)}:{quote(password)}@{host}" + (f":{port}" if port else "")
    url_text = f"{scheme}://{netloc}/{quote(database)}"
    assert target_components(url_text) == components(url_text)
    assert components(url_text)["password"] == password


DOUBTFUL_URLS = {
    "a relative SQLite path (the app's instance folder)": "sqlite:///app.db",
    "a SQLite memory database": "sqlite://",
    "SQLite with query parameters": "sqlite:////tmp/app.db?mode=ro",
    "another driver": "postgresql+asyncpg://app:pw@db/app",
    "another backend": "mssql+pyodbc://app:pw@db/app",
    "an unknown parameter": "postgresql://app:pw@db/app?options=-csearch_path%3Dx",
    "a unix socket in the query": "postgresql://app@/app?host=/var/run/postgresql",
    "a repeated parameter": "postgresql://app@db/app?sslmode=require&sslmode=disable",
    "MySQL SSL options": "mysql+pymysql://app:pw@db/app?ssl_ca=/ca.pem",
    "a port that is not a number": "postgresql://app:pw@db:port/app",
    "no scheme": "db.example.com/app",
}


@pytest.mark.parametrize("url_text", DOUBTFUL_URLS.values(), ids=DOUBTFUL_URLS.keys())
def test_a_url_it_cannot_read_as_the_app_would_is_a_doubt(url_text: str) -> None:
    assert parse_url(url_text) is None
    verdict = decide(url_text, EXAMPLE / "migrations")
    assert not verdict.at_head
    assert "URL" in verdict.reason


def test_the_examples_env_py_is_flask_migrates_single_database_one() -> None:
    assert env_py_doubt(EXAMPLE / "migrations") is None


def test_a_multidb_env_py_is_a_doubt() -> None:
    assert env_py_doubt(EXAMPLE / "migrations_multidb") is not None
    verdict = decide("sqlite:////nonexistent/app.db", EXAMPLE / "migrations_multidb")
    assert not verdict.at_head
    assert "several databases" in verdict.reason


ENV_PY_CHANGES = {
    "a version table": ("**conf_args", "version_table='deploy_version', **conf_args"),
    "a version table schema": ("**conf_args", "version_table_schema='ops', **conf_args"),
    "an engine of its own": ("connectable = get_engine()",
                             "connectable = create_engine(os.environ['X'])"),
    "a bind": ("get_engine()", "get_engine(bind_key='audit')"),
    "a search path": ("with connectable.connect() as connection:",
                      "with connectable.connect() as connection:\n"
                      "        connection.exec_driver_sql('SET search_path TO app')"),
    "not Flask-Migrate's engine": ("current_app.extensions['migrate'].db", "my_extension.db"),
}


@pytest.mark.parametrize("change", ENV_PY_CHANGES.values(), ids=ENV_PY_CHANGES.keys())
def test_an_env_py_that_may_move_the_version_table_is_a_doubt(
    tmp_path: Path, change: tuple[str, str]
) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(EXAMPLE / "migrations", migrations)
    text = (migrations / "env.py").read_text()
    assert change[0] in text
    (migrations / "env.py").write_text(text.replace(change[0], change[1]))
    assert env_py_doubt(migrations) is not None
    assert not decide("sqlite:////nonexistent/app.db", migrations).at_head


def test_a_url_known_only_to_the_app_is_a_doubt() -> None:
    assert not decide(None, EXAMPLE / "migrations").at_head
    assert not decide("sqlite:////tmp/x.db", None).at_head


@pytest.mark.parametrize("module", ["runner.fastpath", "runner.cli"])
def test_importing_it_loads_neither_flask_alembic_nor_sqlalchemy(module: str) -> None:
    code = (f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}}"
            " & {'flask', 'alembic', 'sqlalchemy', 'flask_migrate', 'psycopg', 'pymysql'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"

"""The linter through its API on real apps and real servers: the pending range of an app
migrated to an older head, judged offline and with facts read from a live connection.

Two apps laid out differently: tests/apps/tutorial_app (a package, `myapp:create_app`,
Migrate's default directory) and example/ (an app.py factory, a naming convention,
render_as_batch=True).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest
import sqlalchemy as sa

from runner.lint import (
    DatabaseFacts,
    LintReport,
    LintSettings,
    TableName,
    judge,
    lint_range,
    read_facts,
    render_range,
)
from support import (
    EXAMPLE,
    TUTORIAL_APP,
    Loader,
    Project,
    add_revision,
    copy_app,
    execute,
    kind_of,
    script_heads,
)

psycopg = pytest.importorskip("psycopg")


@dataclass(frozen=True)
class App:
    """How to load one test app, and its `post` table's text column and insert."""

    source: Path
    import_path: str
    column: str
    length: int
    insert_posts: dict[str, str]


APPS = {
    "tutorial": App(TUTORIAL_APP, "myapp:create_app", "body", 140, {
        "postgresql": "INSERT INTO post (body, user_id) SELECT 'post ' || g, 1"
                      " FROM generate_series(1, 3000) g",
        "mysql": "INSERT INTO post (body, user_id) SELECT CONCAT('post ', seq), 1"
                 " FROM seq_1_to_3000",
    }),
    "example": App(EXAMPLE, "app:create_app", "title", 120, {
        "postgresql": "INSERT INTO post (title, slug) SELECT 'post ' || g, 'post-' || g"
                      " FROM generate_series(1, 3000) g",
        "mysql": "INSERT INTO post (title, slug) SELECT CONCAT('post ', seq),"
                 " CONCAT('post-', seq) FROM seq_1_to_3000",
    }),
}


@contextlib.contextmanager
def cursor_on(url: str) -> Iterator[Any]:
    """A plain DB-API cursor on the database (psycopg 3 or PyMySQL), autocommit."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "postgresql":
        dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn, autocommit=True) as connection:
            yield connection.cursor()
    else:
        with contextlib.closing(pymysql.connect(
            host=parsed.host, port=parsed.port or 3306, user=parsed.username,
            password=parsed.password or "", database=parsed.database, autocommit=True,
        )) as connection:
            yield connection.cursor()


def pending_range(tmp_path: Path, load_project: Loader, app: App, url: str) -> tuple[
        Project, str]:
    """The app migrated to its head plus a `tag` table, `user` with one row, `post` with 3,000;
    then a pending revision of dangerous and safe operations. Returns the project and the
    revision the database is at."""
    project_dir = copy_app(app.source, tmp_path / "project")
    tag = add_revision(project_dir, "tag", """
op.create_table("tag", sa.Column("id", sa.Integer(), primary_key=True),
                sa.Column("name", sa.String(40)))
""")
    add_revision(project_dir, "pending", f"""
op.create_index("ix_post_{app.column}", "post", ["{app.column}"])
op.create_index("ix_tag_name", "tag", ["name"])
op.create_table("label", sa.Column("id", sa.Integer(), primary_key=True),
                sa.Column("name", sa.String(40)))
op.create_index("ix_label_name", "label", ["name"])
with op.get_context().autocommit_block():
    op.create_index("ix_post_{app.column}_2", "post", ["{app.column}"],
                    postgresql_concurrently=True)
op.alter_column("post", "{app.column}", type_=sa.String({app.length + 100}),
                existing_type=sa.String({app.length}))
op.add_column("user", sa.Column("status", sa.String(20), nullable=False))
op.add_column("user", sa.Column("plan", sa.String(20), nullable=False, server_default="free"))
op.create_foreign_key("fk_tag_user", "tag", "user", ["id"], ["id"])
op.drop_column("post", "{app.column}")
""")
    project = load_project(project_dir, app.import_path, url)
    project.upgrade(tag)
    quoted_user = '"user"' if kind_of(url) == "postgresql" else "`user`"
    if kind_of(url) == "postgresql":
        # The sizes the test expects are the server's estimates: no autovacuum's ANALYZE may
        # change them between the inserts and the readings.
        execute(url, *(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"
                       for table in ("post", "tag", quoted_user)))
    execute(url, f"INSERT INTO {quoted_user} (id, username, email) VALUES (1, 'ann', 'a@x')",
            app.insert_posts[kind_of(url)])
    return project, tag


def findings(report: LintReport) -> list[tuple[str, str, str | None]]:
    return [(f.rule, f.severity, f.table) for f in report.findings]


@pytest.mark.parametrize("app_name", list(APPS))
@pytest.mark.parametrize("url_fixture", [
    pytest.param("postgresql_url", marks=pytest.mark.postgresql),
    pytest.param("mysql_url", marks=pytest.mark.mysql),
])
def test_pending_range_judged_with_live_sizes(
    app_name: str, url_fixture: str, tmp_path: Path, load_project: Loader,
    request: pytest.FixtureRequest,
) -> None:
    url: str = request.getfixturevalue(url_fixture)
    app = APPS[app_name]
    dialect = kind_of(url)
    project, at = pending_range(tmp_path, load_project, app, url)
    rendered = render_range(project.config, project.script, project.app, dialect, at)
    assert set(rendered.tables) == {TableName(None, "post"), TableName(None, "tag"),
                                    TableName(None, "user")}
    with cursor_on(url) as cursor:
        facts = read_facts(cursor, dialect, rendered.tables)
    post, tag, user = (facts.table(TableName(None, n)) for n in ("post", "tag", "user"))
    assert post is not None and tag is not None and user is not None
    assert (tag.rows, user.rows) == (0, 1)
    assert post.rows is not None and 2000 <= post.rows <= 4000

    report = judge(rendered, facts, LintSettings())
    if dialect == "postgresql":
        assert findings(report) == [
            # 3,000 rows: below RUNNER_LINT_LARGE_TABLE_ROWS, a warning. Not the empty tag
            # table's index, not the new label table's, not CONCURRENTLY in autocommit_block,
            # not the varchar widening, not the column with a server default.
            ("require-concurrent-index-creation", "warning", "post"),
            ("adding-required-field", "error", "user"),
            ("ban-drop-column", "error", "post"),
        ]
        assert (report.findings[0].lock, report.findings[0].rewrite) == ("SHARE", False)
    else:
        assert findings(report) == [
            ("adding-required-field", "error", "user"),
            ("ban-drop-column", "error", "post"),
        ]
        assert report.findings[1].algorithm == "INSTANT"
    assert report.database.connected and report.database.server_version
    assert report.findings[0].rows == (post.rows if dialect == "postgresql" else 1)

    # The same through lint_range, with a lower threshold: the index is an error now.
    strict = lint_range(project.config, project.script, project.app, dialect, at,
                        facts=facts, settings=LintSettings(large_table_rows=1000))
    assert strict.has_errors
    if dialect == "postgresql":
        assert strict.findings[0].severity == "error"

    # Offline: every size unknown, so every locking finding an error.
    offline = lint_range(project.config, project.script, project.app, dialect, at)
    assert not offline.database.connected
    rules = [f.rule for f in offline.findings]
    if dialect == "postgresql":
        assert rules == ["require-concurrent-index-creation", "require-concurrent-index-creation",
                         "adding-required-field", "adding-foreign-key-constraint",
                         "ban-drop-column"]
    else:
        assert rules == ["adding-required-field", "adding-foreign-key-constraint",
                         "ban-drop-column"]
    assert all(f.severity == "error" for f in offline.findings)


@pytest.mark.postgresql
def test_postgresql_facts(postgresql_url: str) -> None:
    # Autovacuum off: "never analyzed" must stay so until the test's own ANALYZE.
    execute(postgresql_url,
            "CREATE TABLE entry (id integer PRIMARY KEY, name varchar(20) NOT NULL,"
            " price numeric(10,2)) WITH (autovacuum_enabled = false)",
            "INSERT INTO entry SELECT g, 'n' || g, g FROM generate_series(1, 3000) g",
            "CREATE SCHEMA other",
            'CREATE TABLE other."Mixed" (id integer) WITH (autovacuum_enabled = false)')
    tables = [(None, "entry"), ("other", "Mixed"), (None, "missing")]
    with cursor_on(postgresql_url) as cursor:
        never_analyzed = read_facts(cursor, "postgresql", tables)
        cursor.execute("ANALYZE entry")
        analyzed = read_facts(cursor, "postgresql", tables)
        cursor.execute("SELECT current_setting('server_version_num')::int")
        number = cursor.fetchone()[0]
    assert never_analyzed.version[0] == number // 10000
    entry = never_analyzed.table(TableName(None, "entry"))
    assert entry is not None
    # reltuples is -1 before the first ANALYZE: counted, since the table is small.
    assert (entry.rows, entry.counted) == (3000, True)
    assert entry.bytes is not None and entry.bytes > 100_000
    assert entry.columns["name"].type == "character varying(20)"
    assert entry.columns["name"].nullable is False and entry.columns["price"].nullable is True
    estimated = analyzed.table(TableName(None, "entry"))
    assert estimated is not None and (estimated.rows, estimated.counted) == (3000, False)
    mixed = never_analyzed.table(TableName("other", "Mixed"))
    assert mixed is not None and mixed.rows == 0
    assert never_analyzed.table(TableName(None, "missing")) is None
    assert never_analyzed.timezone


@pytest.mark.postgresql
def test_postgresql_facts_leave_no_lock_after_the_savepoint(postgresql_url: str) -> None:
    """The caller may read facts on a connection holding a transaction open (the lock's),
    inside a savepoint it rolls back to: nothing of ours may stay locked."""
    execute(postgresql_url, "CREATE TABLE entry (id integer)",
            "INSERT INTO entry SELECT g FROM generate_series(1, 100) g")
    locked = ("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid()"
              " AND relation = 'entry'::regclass")
    with cursor_on(postgresql_url) as cursor:
        cursor.execute("BEGIN")
        cursor.execute("SAVEPOINT lint")
        read_facts(cursor, "postgresql", [(None, "entry")])
        cursor.execute(locked)
        assert cursor.fetchone()[0] > 0  # the size and the count lock the table...
        cursor.execute("ROLLBACK TO SAVEPOINT lint")
        cursor.execute(locked)
        assert cursor.fetchone()[0] == 0  # ... until the savepoint is rolled back
        cursor.execute("ROLLBACK")


@pytest.mark.mysql
def test_mariadb_facts(mysql_url: str) -> None:
    execute(mysql_url,
            "CREATE TABLE entry (id INTEGER PRIMARY KEY, name VARCHAR(20) NOT NULL,"
            " legacy VARCHAR(20) CHARACTER SET latin1) DEFAULT CHARSET=utf8mb4",
            "INSERT INTO entry SELECT seq, CONCAT('n', seq), 'x' FROM seq_1_to_3000",
            "CREATE TABLE empty (id INTEGER) ROW_FORMAT=REDUNDANT")
    with cursor_on(mysql_url) as cursor:
        facts: DatabaseFacts = read_facts(cursor, "mysql",
                                          [(None, "entry"), (None, "empty"), (None, "missing")])
        cursor.execute("SELECT VERSION()")
        version = cursor.fetchone()[0]
    assert facts.backend == ("mariadb" if "MariaDB" in version else "mysql")
    assert facts.version_text == version
    assert facts.version[:2] == tuple(int(part) for part in version.split(".")[:2])
    entry = facts.table(TableName(None, "entry"))
    assert entry is not None and entry.rows is not None and 2000 <= entry.rows <= 4000
    assert (entry.charset, entry.charset_bytes, entry.row_format) == ("utf8mb4", 4, "DYNAMIC")
    assert entry.columns["name"].type == "varchar(20)" and not entry.columns["name"].nullable
    assert (entry.columns["legacy"].charset, entry.columns["legacy"].charset_bytes) == (
        "latin1", 1)
    empty = facts.table(TableName(None, "empty"))
    assert empty is not None and (empty.rows, empty.counted, empty.row_format) == (
        0, True, "REDUNDANT")
    assert facts.table(TableName(None, "missing")) is None


def test_heads_unchanged_by_linting(tmp_path: Path, load_project: Loader) -> None:
    """Linting renders offline: it writes no file into the project and changes no script."""
    project_dir = copy_app(TUTORIAL_APP, tmp_path / "project")
    before = sorted(p.relative_to(project_dir) for p in project_dir.rglob("*")
                    if "__pycache__" not in p.parts)
    project = load_project(project_dir, "myapp:create_app", "sqlite:///" + str(
        tmp_path / "app.db"))
    lint_range(project.config, project.script, project.app, "sqlite")
    after = sorted(p.relative_to(project_dir) for p in project_dir.rglob("*")
                   if "__pycache__" not in p.parts)
    assert after == before
    assert script_heads(project_dir / "migrations") == script_heads(TUTORIAL_APP / "migrations")
    assert not (tmp_path / "app.db").exists()

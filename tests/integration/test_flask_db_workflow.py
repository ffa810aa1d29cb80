"""The Flask-Migrate tutorial workflow, with the real ``flask db`` commands.

Each test gets a fresh database on SQLite, PostgreSQL and MariaDB and drops
it afterwards. The commands run as subprocesses, the way a user types them,
on a copy of ``example/app.py`` (the workflow) or on ``example/`` itself (the
example's own migration history).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from support import EXAMPLE, scripts

# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

GENERATED = re.compile(r"Generating (\S+[/\\]versions[/\\](\w+?)_\w*\.py) \.\.\.\s+done")


class FlaskDB:
    """Runs ``python -m flask db ...`` for one app and one database."""

    def __init__(self, cwd: Path, flask_app: str, database_url: str) -> None:
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
        self.env.pop("EXAMPLE_SECOND_DATABASE_URL", None)
        self.env.update(
            FLASK_APP=flask_app,
            DATABASE_URL=database_url,
            # An edit that keeps the file's size within the mtime's second
            # would otherwise run stale bytecode; it also keeps example/ clean.
            PYTHONDONTWRITEBYTECODE="1",
        )

    def _exec(self, args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flask", "db", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def run(self, *args: str, ok: bool = True) -> str:
        """Run ``flask db ARGS``; assert it succeeded (or failed if not ``ok``).

        Returns stdout and stderr together: Alembic logs to stderr, and
        Flask-Migrate reports errors through logging too.
        """
        proc = self._exec(args)
        output = proc.stdout + proc.stderr
        command = "flask db " + " ".join(args)
        if ok:
            assert proc.returncode == 0, f"{command} failed ({proc.returncode}):\n{output}"
        else:
            assert proc.returncode != 0, f"{command} unexpectedly succeeded:\n{output}"
        return output

    def stdout(self, *args: str) -> str:
        """Run ``flask db ARGS``, which must succeed; return only its stdout."""
        proc = self._exec(args)
        assert proc.returncode == 0, f"flask db {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
        return proc.stdout

    def new_revision(self, *args: str) -> tuple[str, str]:
        """Run a command that writes one script; return (revision id, script text)."""
        output = self.run(*args)
        found = GENERATED.findall(output)
        assert len(found) == 1, f"expected one new script:\n{output}"
        path, revision = found[0]
        return revision, Path(path).read_text()

    def heads(self) -> list[str]:
        """The scripts' head revision ids, from ``flask db heads``."""
        return re.findall(r"^(\w+) \(head\)", self.stdout("heads"), re.MULTILINE)


def edit(path: Path, old: str, new: str) -> None:
    """Replace ``old`` (which must occur once) with ``new`` in ``path``."""
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} not found once in {path}: has example/app.py changed?"
    path.write_text(text.replace(old, new))


def columns(database_url: str, table: str) -> dict[str, Any]:
    """The table's columns and their types, reflected from the database."""
    engine = sa.create_engine(database_url)
    try:
        return {c["name"]: c["type"] for c in sa.inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


def versions(database_url: str) -> list[str]:
    """The revision ids in the database's ``alembic_version`` table.

    Read directly: asking ``flask db current`` each time costs a subprocess.
    """
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table("alembic_version"):
                return []
            rows = connection.exec_driver_sql("SELECT version_num FROM alembic_version")
            return sorted(row[0] for row in rows)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------


# Appended to the copied app.py: it has db, sa, Mapped and mapped_column.
COMMENT_MODEL = """

class Comment(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(sa.Text)
    post_id: Mapped[int] = mapped_column(sa.ForeignKey("post.id"))
"""


def test_tutorial_workflow(database_url: str, tmp_path: Path) -> None:
    """init, migrate, upgrade, downgrade, inspect, stamp, check, branch and merge."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(EXAMPLE / "app.py", project / "app.py")
    models = project / "app.py"
    db = FlaskDB(project, "app:create_app()", database_url)
    dialect = sa.make_url(database_url).get_backend_name()

    # init: a fresh migration repository from Flask-Migrate's template.
    db.run("init")
    for name in ("alembic.ini", "env.py", "script.py.mako", "versions"):
        assert (project / "migrations" / name).exists(), name

    # check: the models are ahead of the (empty) database.
    assert "New upgrade operations detected" in db.run("check", ok=False)

    initial, script = db.new_revision("migrate", "-m", "initial")
    for table in ("user", "more_user_info", "post"):
        assert f"op.create_table('{table}'" in script
    db.run("upgrade")
    assert versions(database_url) == [initial]

    # migrate detects an added column...
    edit(
        models,
        "    slug: Mapped[str] = mapped_column(sa.String(120), unique=True)\n",
        "    slug: Mapped[str] = mapped_column(sa.String(120), unique=True)\n"
        "    views: Mapped[int | None] = mapped_column(sa.Integer)\n",
    )
    add_column, script = db.new_revision("migrate", "-m", "post views")
    assert "add_column(sa.Column('views', sa.Integer()" in script
    db.run("upgrade")

    # ... an added table with a foreign key ...
    models.write_text(models.read_text() + COMMENT_MODEL)
    add_table, script = db.new_revision("migrate", "-m", "comments")
    assert "op.create_table('comment'" in script
    assert "sa.ForeignKeyConstraint(['post_id'], ['post.id']" in script
    db.run("upgrade")

    # ... and a changed column type (compare_type is on in Flask-Migrate 4).
    edit(
        models,
        "    title: Mapped[str] = mapped_column(sa.String(120))\n",
        "    title: Mapped[str] = mapped_column(sa.String(200))\n",
    )
    alter_type, script = db.new_revision("migrate", "-m", "longer titles")
    assert "alter_column('title'" in script
    assert "type_=sa.String(length=200)" in script
    db.run("upgrade")
    assert re.fullmatch(rf"{alter_type} \(head\)\n", db.stdout("current"))
    assert "No new upgrade operations detected" in db.run("check")
    assert columns(database_url, "post")["title"].length == 200

    # downgrade: one step (the default is -1), then all the way, then back up.
    db.run("downgrade")
    assert versions(database_url) == [add_table]
    assert columns(database_url, "post")["title"].length == 120
    db.run("downgrade", "base")
    assert versions(database_url) == []
    db.run("upgrade")
    assert versions(database_url) == [alter_type]

    # history, heads, show: read the scripts, not the database.
    history = db.stdout("history")
    chain = [initial, add_column, add_table, alter_type]
    positions = [history.index(f"-> {rev}") for rev in chain]
    assert positions == sorted(positions, reverse=True), history  # newest first
    assert f"{add_table} -> {alter_type} (head), longer titles" in history
    assert db.heads() == [alter_type]
    shown = db.stdout("show", add_table)
    assert f"Rev: {add_table}" in shown
    assert f"Parent: {add_column}" in shown
    assert "comments" in shown

    # stamp moves the version table only; check then sees the database behind.
    db.run("stamp", add_table)
    assert versions(database_url) == [add_table]
    assert "Target database is not up to date" in db.run("check", ok=False)
    db.run("stamp", "head")
    assert versions(database_url) == [alter_type]

    # An empty hand-written revision.
    empty, script = db.new_revision("revision", "-m", "empty step")
    assert f"down_revision = '{alter_type}'" in script
    assert re.search(r"def upgrade\(\):\n\s+pass\n", script), script

    # Two heads (a branch spliced onto an old revision) block upgrade until merged.
    side, script = db.new_revision(
        "revision", "-m", "side branch", "--head", add_column, "--splice"
    )
    assert f"down_revision = '{add_column}'" in script
    assert sorted(db.heads()) == sorted([empty, side])
    assert f"{add_column} (branchpoint)" in db.stdout("branches")
    assert "Multiple head revisions" in db.run("upgrade", ok=False)
    merge, script = db.new_revision("merge", "heads", "-m", "merge")
    parents = re.search(r"down_revision = \('(\w+)', '(\w+)'\)", script)
    assert parents is not None, script
    assert sorted(parents.groups()) == sorted([empty, side])
    db.run("upgrade")
    assert versions(database_url) == [merge]
    assert "No new upgrade operations detected" in db.run("check")

    # Offline SQL. SQLite's batch mode must reflect the table it recreates, so
    # offline it can only render the revisions without batch operations.
    sql = db.stdout("upgrade", "--sql", initial if dialect == "sqlite" else "head")
    assert "CREATE TABLE alembic_version" in sql
    assert re.search(r"CREATE TABLE [`\"]?user[`\"]? \(", sql), sql
    if dialect != "sqlite":
        assert re.search(r"CREATE TABLE [`\"]?comment[`\"]? \(", sql), sql
        assert re.search(r"ALTER TABLE post (ALTER|MODIFY) (COLUMN )?title", sql), sql

    # SQLite cannot drop a column in place: batch mode recreates the table, and
    # its downgrade puts the column back.
    if dialect == "sqlite":
        edit(models, "    views: Mapped[int | None] = mapped_column(sa.Integer)\n", "")
        drop_column, script = db.new_revision("migrate", "-m", "drop views")
        assert "with op.batch_alter_table('post'" in script
        assert "batch_op.drop_column('views')" in script
        db.run("upgrade")
        assert "views" not in columns(database_url, "post")
        db.run("downgrade")
        assert "views" in columns(database_url, "post")
        db.run("upgrade")
        assert versions(database_url) == [drop_column]
        assert "views" not in columns(database_url, "post")


# Walks the history one revision at a time through Flask-Migrate's API (the
# functions behind `flask db upgrade +1` / `downgrade -1`) in one process: a
# subprocess per step would double the run time. Prints the revision(s) after
# each step as one JSON line.
WALK_HISTORY = """
import json, os
import flask_migrate
from alembic.runtime.migration import MigrationContext
from flask.cli import ScriptInfo

app = ScriptInfo(app_import_path=os.environ["FLASK_APP"]).load_app()
steps = int(os.environ["WALK_STEPS"])
with app.app_context():
    engine = app.extensions["sqlalchemy"].engine

    def current():
        with engine.connect() as connection:
            return sorted(MigrationContext.configure(connection).get_current_heads())

    up = []
    for _ in range(steps):
        flask_migrate.upgrade(revision="+1")
        up.append(current())
    down = []
    for _ in range(steps):
        flask_migrate.downgrade(revision="-1")
        down.append(current())
print(json.dumps({"up": up, "down": down}))
"""


def test_example_history(database_url: str, tmp_path: Path) -> None:
    """example/migrations: one head; every step up and down works; head matches the models."""
    db = FlaskDB(tmp_path, f"{EXAMPLE / 'app.py'}:create_app()", database_url)

    heads = db.heads()
    assert len(heads) == 1, heads
    # Oldest first; walk_revisions() goes from the head down.
    script_dir = scripts()
    chain = [script.revision for script in script_dir.walk_revisions()][::-1]
    assert len(chain) >= 3
    assert chain[-1] == heads[0]

    walk = subprocess.run(
        [sys.executable, "-c", WALK_HISTORY],
        cwd=tmp_path,
        env={**db.env, "WALK_STEPS": str(len(chain))},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert walk.returncode == 0, walk.stdout + walk.stderr
    steps = json.loads(walk.stdout.strip().splitlines()[-1])
    assert steps["up"] == [[rev] for rev in chain]
    assert steps["down"] == [[rev] for rev in chain[-2::-1]] + [[]]

    db.run("upgrade")
    assert versions(database_url) == heads
    assert "No new upgrade operations detected" in db.run("check")

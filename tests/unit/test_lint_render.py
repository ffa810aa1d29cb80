"""Rendering real apps' revision ranges offline, statement by statement (no database: the
URLs point nowhere and nothing connects), then judging them offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.lint import (
    LintReport,
    LintSettings,
    RenderError,
    TableName,
    judge,
    render_range,
    render_sql,
)
from support import (
    EXAMPLE,
    TUTORIAL_APP,
    Loader,
    Project,
    add_revision,
    copy_app,
    script_heads,
)

NOWHERE = {
    "postgresql": "postgresql+psycopg://nobody@127.0.0.1:9/nowhere",
    "mysql": "mysql+pymysql://nobody@127.0.0.1:9/nowhere",
}


@pytest.fixture
def tutorial(tmp_path: Path) -> Path:
    return copy_app(TUTORIAL_APP, tmp_path / "tutorial_app")


def line_of(path: Path, text: str) -> int:
    """The line of the revision file that contains `text`."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


def revision_file(project: Path, revision: str) -> Path:
    (found,) = (project / "migrations" / "versions").glob(f"{revision}_*.py")
    return found


def test_statements_keep_their_revision_line_and_transaction(
    tutorial: Path, load_project: Loader
) -> None:
    head = script_heads(tutorial / "migrations")[0]
    revision = add_revision(tutorial, "indexes", """
op.create_index("ix_post_body", "post", ["body"])
with op.get_context().autocommit_block():
    op.create_index("ix_post_body_c", "post", ["body"], postgresql_concurrently=True)
op.drop_index("ix_post_body", table_name="post")
op.alter_column("post", "body", type_=sa.String(200), existing_type=sa.String(140))
""")
    project = load_project(tutorial, "myapp:create_app", NOWHERE["postgresql"])
    rendered = render_range(project.config, project.script, project.app, "postgresql", head)
    (only,) = rendered.revisions
    path = revision_file(tutorial, revision)
    assert (only.revision, Path(only.path)) == (revision, path)
    statements = [(s.sql, s.line, s.transaction is not None) for s in only.statements]
    assert statements == [
        ("CREATE INDEX ix_post_body ON post (body)", line_of(path, '"ix_post_body", "post"'),
         True),
        ("CREATE INDEX CONCURRENTLY ix_post_body_c ON post (body)",
         line_of(path, "ix_post_body_c"), False),
        ("DROP INDEX ix_post_body", line_of(path, "op.drop_index"), True),
        ("ALTER TABLE post ALTER COLUMN body TYPE VARCHAR(200)", line_of(path, "alter_column"),
         True),
    ]
    # COMMIT ... BEGIN around the autocommit block: the statements after it are in a new one.
    assert only.statements[0].transaction != only.statements[2].transaction
    assert rendered.tables == (TableName(None, "post"),)

    report = judge_offline(project, head)
    assert [(f.rule, f.line, f.table) for f in report.findings] == [
        ("require-concurrent-index-creation", statements[0][1], "post"),
        ("require-concurrent-index-deletion", statements[2][1], "post"),
    ]
    assert all(f.file == str(path) or Path(f.file or "").resolve() == path
               for f in report.findings)


def judge_offline(project: Project, head: str) -> LintReport:
    return project.lint("postgresql", from_revision=head)


def test_a_fresh_apps_whole_history_is_clean(tutorial: Path, load_project: Loader) -> None:
    """The first revision creates its tables and their indexes: nothing uses them yet."""
    for dialect in ("postgresql", "mysql"):
        project = load_project(tutorial, "myapp:create_app", NOWHERE[dialect])
        assert project.lint(dialect).findings == ()


def test_an_unrenderable_revision_is_a_warning_and_the_next_is_judged(
    tutorial: Path, load_project: Loader
) -> None:
    head = script_heads(tutorial / "migrations")[0]
    reads = add_revision(tutorial, "reads", """
op.add_column("post", sa.Column("title", sa.String(80)))
rows = op.get_bind().execute(sa.text("SELECT id FROM post")).fetchall()
op.drop_column("post", "body")
""")
    after = add_revision(tutorial, "after", 'op.drop_column("user", "email")')
    project = load_project(tutorial, "myapp:create_app", NOWHERE["postgresql"])
    report = project.lint("postgresql", from_revision=head)
    assert [(f.rule, f.severity, f.revision) for f in report.findings] == [
        ("unrenderable-revision", "warning", reads), ("ban-drop-column", "error", after)]
    warning = report.findings[0]
    assert warning.line == line_of(revision_file(tutorial, reads), "get_bind")
    assert f"revision {reads} cannot be rendered offline" in warning.message
    assert "judged only the 2 statements" in warning.message


def test_range_bounds(tutorial: Path, load_project: Loader) -> None:
    head = script_heads(tutorial / "migrations")[0]
    first = add_revision(tutorial, "first", 'op.drop_column("post", "body")')
    second = add_revision(tutorial, "second", 'op.drop_column("user", "email")')
    project = load_project(tutorial, "myapp:create_app", NOWHERE["postgresql"])
    assert [f.revision for f in project.lint("postgresql", head).findings] == [first, second]
    assert [f.revision for f in project.lint("postgresql", first).findings] == [second]
    assert [f.revision for f in project.lint("postgresql", head, first).findings] == [first]


def test_mysql_uses_the_operations_existing_type(tutorial: Path, load_project: Loader) -> None:
    head = script_heads(tutorial / "migrations")[0]
    add_revision(tutorial, "types", """
op.alter_column("post", "body", type_=sa.String(200), existing_type=sa.String(140))
op.alter_column("post", "user_id", type_=sa.BigInteger(), existing_type=sa.Integer())
op.alter_column("user", "email", nullable=False, existing_type=sa.String(120))
""")
    project = load_project(tutorial, "myapp:create_app", NOWHERE["mysql"])
    report = project.lint("mysql", head)
    assert [(f.rule, f.algorithm) for f in report.findings] == [
        ("changing-column-type", "COPY"), ("adding-not-nullable-field", "INPLACE")]
    assert "(from INT)" in report.findings[0].message


def test_allowed_by_a_comment_in_the_revision(tutorial: Path, load_project: Loader) -> None:
    head = script_heads(tutorial / "migrations")[0]
    add_revision(tutorial, "allowed", """
op.create_index("ix_post_body", "post", ["body"])  # runner: allow {} -- posts is tiny
op.drop_column("post", "body")
""".format("require-concurrent-index-creation"))
    project = load_project(tutorial, "myapp:create_app", NOWHERE["postgresql"])
    report = project.lint("postgresql", head)
    assert [(f.rule, f.severity) for f in report.findings] == [
        ("require-concurrent-index-creation", "allowed"), ("ban-drop-column", "error")]
    report = project.lint("postgresql", head, settings=LintSettings(
        allow=frozenset({"ban-drop-column"})))
    assert not report.has_errors


def test_example_app_in_batch_mode(tmp_path: Path, load_project: Loader) -> None:
    """The example app: an app.py factory, a naming convention, render_as_batch=True."""
    example = copy_app(EXAMPLE, tmp_path / "example")
    head = script_heads(example / "migrations")[0]
    add_revision(example, "batch", """
with op.batch_alter_table("post") as batch_op:
    batch_op.add_column(sa.Column("status", sa.String(20), nullable=False))
    batch_op.create_index(batch_op.f("ix_post_status"), ["status"])
""")
    project = load_project(example, "app:create_app", NOWHERE["postgresql"])
    report = project.lint("postgresql", head)
    assert [(f.rule, f.table) for f in report.findings] == [
        ("adding-required-field", "post"), ("require-concurrent-index-creation", "post")]


def test_sqlite_batch_mode_needs_a_live_database(tmp_path: Path, load_project: Loader) -> None:
    """Offline, batch mode on SQLite cannot reflect the table it rebuilds: the revision is
    unrenderable (a warning), not an error."""
    example = copy_app(EXAMPLE, tmp_path / "example")
    head = script_heads(example / "migrations")[0]
    add_revision(example, "rebuild", """
with op.batch_alter_table("post") as batch_op:
    batch_op.alter_column("title", type_=sa.String(200), existing_type=sa.String(120))
""")
    project = load_project(example, "app:create_app", f"sqlite:///{tmp_path / 'x.db'}")
    (finding,) = project.lint("sqlite", head).findings
    assert (finding.rule, finding.severity) == ("unrenderable-revision", "warning")
    assert "requires a live database connection" in finding.message


def test_sqlite_batch_rebuild_is_not_a_drop_and_a_rename() -> None:
    """What batch mode emits when it can rebuild (copy_from, or online)."""
    report = judge(render_sql([("rev1", [
        "CREATE TABLE _alembic_tmp_post (id INTEGER NOT NULL, title VARCHAR(200))",
        "INSERT INTO _alembic_tmp_post (id, title) SELECT post.id, post.title FROM post",
        "DROP TABLE post", "ALTER TABLE _alembic_tmp_post RENAME TO post",
    ])], "sqlite"))
    assert report.findings == ()


def test_env_py_rendering_another_database(tutorial: Path, load_project: Loader) -> None:
    project = load_project(tutorial, "myapp:create_app", NOWHERE["mysql"])
    with pytest.raises(RenderError, match="renders mysql SQL, not postgresql"):
        project.lint("postgresql")


def test_env_py_failing_outside_a_revision(tutorial: Path, load_project: Loader) -> None:
    env = tutorial / "migrations" / "env.py"
    env.write_text(env.read_text() + "\nraise RuntimeError('env.py is broken')\n")
    project = load_project(tutorial, "myapp:create_app", NOWHERE["postgresql"])
    with pytest.raises(RenderError, match=r"env\.py is broken"):
        project.lint("postgresql")

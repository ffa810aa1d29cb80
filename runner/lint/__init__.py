"""The safety check: judge each statement of a revision range against the live tables.

`runner lint` and the gate of `migrate`/`run` (RUNNER_LINT) import this package only when
they lint: nothing here runs, nor is sqlglot imported, on the no-op path.

    rendered = render_range(config, script, app, "postgresql", from_revision, to_revision)
    facts = read_facts(cursor, "postgresql", rendered.tables)   # or None: offline
    report = judge(rendered, facts, LintSettings(large_table_rows=10_000))
    print(render_report(report, "text"))

`lint_range` does the first and last steps at once, with facts already read (or None).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.lint.capture import RenderError
from runner.lint.changes import TableName
from runner.lint.facts import ColumnFacts, DatabaseFacts, TableFacts, read_facts
from runner.lint.judge import LintSettings, judge
from runner.lint.rendered import RenderedRange, render_range, render_sql
from runner.lint.report import DatabaseInfo, Finding, LintReport, render_report
from runner.lint.rules import RULES

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from flask import Flask


def lint_range(
    config: Config, script: ScriptDirectory, app: Flask, dialect: str,
    from_revision: str | None = None, to_revision: str | None = None,
    facts: DatabaseFacts | None = None, settings: LintSettings | None = None,
) -> LintReport:
    """Render the range offline and judge it: `facts` None judges offline (every size
    unknown, so every locking finding an error; the server version assumed).

    Facts read for `render_range(...).tables` describe exactly the tables the range touches;
    facts read for other tables simply go unused.
    """
    rendered = render_range(config, script, app, dialect, from_revision, to_revision)
    return judge(rendered, facts, settings)


__all__ = [
    "RULES", "ColumnFacts", "DatabaseFacts", "DatabaseInfo", "Finding", "LintReport",
    "LintSettings", "RenderError", "RenderedRange", "TableFacts", "TableName", "judge",
    "lint_range", "read_facts", "render_range", "render_report", "render_sql",
]

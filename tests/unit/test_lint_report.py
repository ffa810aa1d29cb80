"""The three renderings of a lint report: text (as ruff and squawk), JSON, GitHub annotations."""

from __future__ import annotations

import json

import pytest

from runner.lint import DatabaseInfo, Finding, LintReport, render_report

FIELDS = ["rule", "severity", "revision", "file", "line", "table", "statement", "rows", "bytes",
          "lock", "rewrite", "algorithm", "message", "fix"]


def finding(severity: str = "error", **overrides: object) -> Finding:
    values: dict[str, object] = dict(
        rule="require-concurrent-index-creation", severity=severity, revision="1a2b3c",
        file="migrations/versions/1a2b3c_index.py", line=21, table="entry",
        statement="CREATE INDEX ix_entry_amount ON entry (amount)", rows=26_000,
        bytes=3_100_000, lock="SHARE", rewrite=False, algorithm=None,
        message="CREATE INDEX ix_entry_amount on entry (26,000 rows) takes a SHARE lock",
        fix="use postgresql_concurrently=True",
    )
    values.update(overrides)
    return Finding(**values)  # type: ignore[arg-type]


REPORT = LintReport(
    findings=(finding(), finding("warning", rule="unclassified-statement", lock=None,
                                 rewrite=None, table=None, fix=None, message="50%: a, b\nc")),
    database=DatabaseInfo(backend="postgresql", server_version="15.4", connected=True),
)


def test_text_is_one_line_per_finding_then_the_fix() -> None:
    assert render_report(REPORT, "text").splitlines() == [
        "migrations/versions/1a2b3c_index.py:21: require-concurrent-index-creation error:"
        " CREATE INDEX ix_entry_amount on entry (26,000 rows) takes a SHARE lock",
        "    fix: use postgresql_concurrently=True",
        "migrations/versions/1a2b3c_index.py:21: unclassified-statement warning: 50%: a, b",
        "c",
    ]


def test_json_has_findings_and_database() -> None:
    printed = json.loads(render_report(REPORT, "json"))
    assert list(printed) == ["findings", "database"]
    assert [list(item) for item in printed["findings"]] == [FIELDS, FIELDS]
    assert printed["findings"][0]["rewrite"] is False
    assert printed["findings"][1]["lock"] is None
    assert printed["database"] == {"backend": "postgresql", "server_version": "15.4",
                                   "connected": True, "assumed_version": None}


def test_github_annotations_escape_their_data() -> None:
    lines = render_report(REPORT, "github").splitlines()
    assert lines == [
        "::error file=migrations/versions/1a2b3c_index.py,line=21,"
        "title=require-concurrent-index-creation::CREATE INDEX ix_entry_amount on entry"
        " (26,000 rows) takes a SHARE lock%0Afix: use postgresql_concurrently=True",
        "::warning file=migrations/versions/1a2b3c_index.py,line=21,"
        "title=unclassified-statement::50%25: a, b%0Ac",
    ]


def test_allowed_findings_are_notices_and_fail_nothing() -> None:
    report = LintReport(findings=(finding("allowed"),), database=REPORT.database)
    assert render_report(report, "github").startswith("::notice ")
    assert not report.has_errors
    assert REPORT.has_errors


def test_an_empty_report() -> None:
    report = LintReport(findings=(), database=DatabaseInfo("mysql", None, False, "8.0.29"))
    assert render_report(report, "text") == render_report(report, "github") == ""
    assert json.loads(render_report(report, "json")) == {"findings": [], "database": {
        "backend": "mysql", "server_version": None, "connected": False,
        "assumed_version": "8.0.29"}}


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        render_report(REPORT, "xml")

"""Findings and their three renderings: text (as ruff and squawk print), JSON, and GitHub
workflow annotations."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

SEVERITIES = ("error", "warning", "allowed")
FORMATS = ("text", "json", "github")
GITHUB_COMMANDS = {"error": "error", "warning": "warning", "allowed": "notice"}


@dataclass(frozen=True)
class Finding:
    """One rule a statement (or a revision) breaks. Claims (`lock`, `rewrite`, `algorithm`)
    say what the server does; None where they do not apply."""

    rule: str
    severity: str
    """error, warning or allowed (acknowledged: fails nothing)."""
    revision: str | None
    file: str | None
    line: int | None
    table: str | None
    statement: str | None
    rows: int | None
    bytes: int | None
    lock: str | None
    """PostgreSQL: the strongest lock mode the statement takes on the table."""
    rewrite: bool | None
    """PostgreSQL: whether the statement rewrites the table."""
    algorithm: str | None
    """MySQL/MariaDB: the cheapest ALGORITHM the server accepts: INSTANT, INPLACE or COPY."""
    message: str
    fix: str | None

    def as_dict(self) -> dict[str, Any]:
        """The finding's fields, as `--format json` and the `lint.finding` event carry them."""
        return asdict(self)


@dataclass(frozen=True)
class DatabaseInfo:
    """The server the findings were judged against."""

    backend: str
    server_version: str | None
    """As the server reports it; None offline."""
    connected: bool
    assumed_version: str | None = None
    """Offline: the version whose behaviour the claims describe."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LintReport:
    findings: tuple[Finding, ...]
    database: DatabaseInfo

    @property
    def has_errors(self) -> bool:
        """Whether any finding is an error: `runner lint` exits 8, the gate refuses."""
        return any(finding.severity == "error" for finding in self.findings)

    def as_dict(self) -> dict[str, Any]:
        return {"findings": [finding.as_dict() for finding in self.findings],
                "database": self.database.as_dict()}


def render_report(report: LintReport, output_format: str) -> str:
    """The report as `runner lint --format FORMAT` prints it on stdout (ends with a newline
    when there is anything to print; JSON always)."""
    if output_format == "json":
        return json.dumps(report.as_dict(), indent=2) + "\n"
    if output_format == "text":
        return "".join(_text(finding) for finding in report.findings)
    if output_format == "github":
        return "".join(_github(finding) for finding in report.findings)
    raise ValueError(f"unknown format {output_format!r}: one of {', '.join(FORMATS)}")


def _where(finding: Finding) -> str:
    return f"{finding.file or '(unknown file)'}:{finding.line or 1}"


def _text(finding: Finding) -> str:
    text = f"{_where(finding)}: {finding.rule} {finding.severity}: {finding.message}\n"
    if finding.fix:
        text += f"    fix: {finding.fix}\n"
    return text


def _github(finding: Finding) -> str:
    """A workflow command: `::error file=F,line=L,title=RULE::message` (the fix on a second
    line of the message)."""
    properties = []
    if finding.file:
        properties.append(f"file={_property(finding.file)}")
        properties.append(f"line={finding.line or 1}")
    properties.append(f"title={_property(finding.rule)}")
    message = finding.message + (f"\nfix: {finding.fix}" if finding.fix else "")
    command = GITHUB_COMMANDS.get(finding.severity, "notice")
    return f"::{command} {','.join(properties)}::{_data(message)}\n"


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")

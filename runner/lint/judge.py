"""Judge a rendered range against the server: findings with severity, claims and fix.

Severity: a rule that breaks the running release, or that the server refuses, is an error
whatever the table's size; a locking rule is an error when the table's row estimate is at or
above `large_table_rows` or unknown (offline, never analyzed and big, not found), a warning
when smaller, and no finding at all when the table is empty. An acknowledged finding (the
revision's `# runner: allow RULE -- reason`, or `LintSettings.allow`) is `allowed`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from runner.lint.allow import Allowances, read_allowances
from runner.lint.changes import (
    AddCheck,
    AddForeignKey,
    AlterColumnType,
    Change,
    RedefineColumn,
    TableName,
    ValidateConstraint,
)
from runner.lint.effects import (
    CHARSET_BYTES,
    OFFLINE_VERSIONS,
    Effect,
    OldColumn,
    Server,
    Surroundings,
    costliest_algorithm,
    effect,
    mysql_type_change,
    redefinition,
    strongest_lock,
)
from runner.lint.facts import DatabaseFacts, TableFacts
from runner.lint.fixes import fix_for
from runner.lint.rendered import RenderedRange, RenderedRevision, RenderedStatement
from runner.lint.report import DatabaseInfo, Finding, LintReport
from runner.lint.rules import ADVISORY, BREAKING, FAILING, Hit, Situation, hits

DEFAULT_LARGE_TABLE_ROWS = 10_000


@dataclass(frozen=True)
class LintSettings:
    """RUNNER_LINT_LARGE_TABLE_ROWS and RUNNER_LINT_ALLOW."""

    large_table_rows: int = DEFAULT_LARGE_TABLE_ROWS
    allow: frozenset[str] = field(default_factory=frozenset)
    """Rule ids acknowledged for the whole project."""


def server_for(dialect: str, facts: DatabaseFacts | None) -> Server:
    """The server as read, or as assumed offline from the URL's dialect."""
    if facts is not None:
        return Server(backend=facts.backend, version=facts.version, timezone=facts.timezone)
    return Server(backend=dialect, version=OFFLINE_VERSIONS.get(dialect, ()), assumed=True)


def judge(
    rendered: RenderedRange, facts: DatabaseFacts | None = None,
    settings: LintSettings | None = None,
) -> LintReport:
    """The findings of a rendered range; `facts` None: offline (sizes unknown)."""
    settings = settings or LintSettings()
    server = server_for(rendered.dialect, facts)
    judging = _Judging(server, facts, settings)
    findings = [finding for revision in rendered.revisions
                for finding in judging.revision(revision)]
    return LintReport(findings=tuple(findings), database=DatabaseInfo(
        backend=server.backend, server_version=facts.version_text if facts else None,
        connected=facts is not None,
        assumed_version=".".join(map(str, server.version)) if server.assumed else None,
    ))


@dataclass(frozen=True)
class _Judged:
    change: Change
    effect: Effect
    situation: Situation


class _Judging:
    """The state of one judgement: the constraints added NOT VALID in each transaction."""

    def __init__(self, server: Server, facts: DatabaseFacts | None,
                 settings: LintSettings) -> None:
        self.server = server
        self.facts = facts
        self.settings = settings
        self.not_valid: dict[tuple[int, TableName | None, str], str] = {}
        """(transaction, table, constraint) -> the lock its ADD ... NOT VALID took."""

    def revision(self, revision: RenderedRevision) -> list[Finding]:
        found: list[Finding] = []
        for statement in revision.statements:
            found.extend(self._statement(revision, statement))
        if revision.error is not None:
            found.append(self._unrenderable(revision))
        if not found:
            return found
        return self._acknowledged(found, read_allowances(revision.path))

    def _statement(self, revision: RenderedRevision,
                   statement: RenderedStatement) -> Iterator[Finding]:
        judged = [self._judge(change, statement) for change in statement.changes]
        for item in judged:
            for hit in hits(item.situation, lambda table: self._sized(statement, table)):
                finding = self._finding(revision, statement, judged, hit)
                if finding is not None:
                    yield finding

    def _judge(self, change: Change, statement: RenderedStatement) -> _Judged:
        table_facts = self._table_facts(statement, change.table)
        old = self._old_column(change, statement, table_facts)
        new_charset, new_charset_bytes = self._new_charset(change, table_facts)
        what = None
        if isinstance(change, RedefineColumn):
            hint = statement.hint
            what = redefinition(change, old, hint.type_given if hint else None,
                                hint.nullable if hint else None)
            if old and old.charset and new_charset and old.charset != new_charset:
                # MODIFY without CHARACTER SET gives the column the table's default.
                what = replace(what, type_changes=True)
        around = Surroundings(
            old=old, redefinition=what, in_transaction=statement.transaction is not None,
            row_format=table_facts.row_format if table_facts else None,
            new_charset=new_charset, new_charset_bytes=new_charset_bytes,
        )
        result = effect(change, self.server, around)
        held = None
        if isinstance(change, (AddCheck, AddForeignKey)) and change.not_valid and change.name \
                and statement.transaction is not None and result.lock:
            self.not_valid[(statement.transaction, change.table, change.name)] = result.lock
        if isinstance(change, ValidateConstraint) and statement.transaction is not None:
            held = self.not_valid.get((statement.transaction, change.table, change.name))
        type_effect = None
        if isinstance(change, RedefineColumn) and self.server.is_mysql:
            type_effect = mysql_type_change(old, change.type, self.server, around)
        situation = Situation(
            change=change, effect=result, server=self.server,
            new_table=statement.is_new(change.table), old=old, redefinition=what,
            type_effect=type_effect, held_lock=held,
        )
        return _Judged(change, result, situation)

    def _table_facts(self, statement: RenderedStatement,
                     table: TableName | None) -> TableFacts | None:
        origin = statement.origin(table)
        return self.facts.table(origin) if self.facts and origin else None

    def _old_column(self, change: Change, statement: RenderedStatement,
                    table_facts: TableFacts | None) -> OldColumn | None:
        """The column before a type change: the operation's `existing_*` arguments first (the
        live column may predate earlier revisions of the range), then the live column."""
        if not isinstance(change, (AlterColumnType, RedefineColumn)):
            return None
        from runner.lint.parse import parse_type  # sqlglot is loaded: a statement was parsed

        hint = statement.hint
        live = table_facts.columns.get(change.column) if table_facts else None
        old_type = None
        if hint and hint.existing_type:
            old_type = parse_type(hint.existing_type, self._parse_dialect())
        if old_type is None and live is not None:
            old_type = parse_type(live.type, self._parse_dialect())
        nullable = hint.existing_nullable if hint and hint.existing_nullable is not None else (
            live.nullable if live else None)
        return OldColumn(type=old_type, nullable=nullable,
                         charset=live.charset if live else None,
                         charset_bytes=live.charset_bytes if live else None)

    def _new_charset(self, change: Change,
                     table_facts: TableFacts | None) -> tuple[str | None, int | None]:
        if not isinstance(change, RedefineColumn) or change.type is None:
            return None, None
        if change.type.charset:
            return change.type.charset, CHARSET_BYTES.get(change.type.charset)
        if table_facts and table_facts.charset:
            return table_facts.charset, table_facts.charset_bytes
        return None, None

    def _parse_dialect(self) -> str:
        return self.server.backend if self.server.backend in (
            "postgresql", "mysql", "mariadb", "sqlite") else "postgresql"

    def _sized(self, statement: RenderedStatement, table: TableName | None) -> str:
        """'entry (26,000 rows, 3.1 MB)', or what is known of its size."""
        if table is None:
            return "its table"
        if self.facts is None:
            return f"{table} (size unknown offline)"
        table_facts = self._table_facts(statement, table)
        if table_facts is None:
            return f"{table} (not found in the database)"
        if table_facts.rows is None:
            return f"{table} (row count unknown, {_megabytes(table_facts.bytes)})"
        return f"{table} ({table_facts.rows:,} rows, {_megabytes(table_facts.bytes)})"

    def _finding(self, revision: RenderedRevision, statement: RenderedStatement,
                 judged: list[_Judged], hit: Hit) -> Finding | None:
        table_facts = self._table_facts(statement, hit.table)
        rows = table_facts.rows if table_facts else None
        severity = self._severity(hit.rule, rows, table_facts is not None)
        if severity is None:
            return None
        lock, rewrite, algorithm = self._claims(judged, hit)
        return Finding(
            rule=hit.rule, severity=severity, revision=revision.revision,
            file=_display_path(revision.path), line=statement.line,
            table=str(hit.table) if hit.table else None, statement=statement.sql,
            rows=rows, bytes=table_facts.bytes if table_facts else None,
            lock=lock, rewrite=rewrite, algorithm=algorithm, message=hit.message, fix=hit.fix,
        )

    def _severity(self, rule: str, rows: int | None, found: bool) -> str | None:
        """error/warning, or None: no finding (a locking rule on an empty table)."""
        if rule in BREAKING or rule in FAILING:
            return "error"
        if rule in ADVISORY:
            return "warning"
        if rows is None or not found or rows >= self.settings.large_table_rows:
            return "error"
        return "warning" if rows > 0 else None

    def _claims(self, judged: list[_Judged],
                hit: Hit) -> tuple[str | None, bool | None, str | None]:
        """The statement's claims on the finding's table: PostgreSQL's strongest lock and
        whether it rewrites; MySQL/MariaDB's algorithm."""
        if not hit.claims:
            return None, None, None
        if self.server.is_mysql:
            return None, None, costliest_algorithm([item.effect.algorithm for item in judged])
        if self.server.backend != "postgresql":
            return None, None, None
        locks: list[str | None] = [hit.lock]
        rewrites: list[bool] = []
        for item in judged:
            if item.change.table == hit.table:
                locks.append(item.effect.lock)
                if item.effect.rewrite is not None:
                    rewrites.append(item.effect.rewrite)
            locks.extend(mode for table, mode in item.effect.also_locks if table == hit.table)
        return strongest_lock(locks), (any(rewrites) if rewrites else None), None

    def _unrenderable(self, revision: RenderedRevision) -> Finding:
        judged = len(revision.statements)
        return Finding(
            rule="unrenderable-revision", severity="warning", revision=revision.revision,
            file=_display_path(revision.path), line=revision.error_line, table=None,
            statement=None, rows=None, bytes=None, lock=None, rewrite=None, algorithm=None,
            message=(f"revision {revision.revision} cannot be rendered offline"
                     f" ({revision.error}): it reads the database, so the linter judged only"
                     f" the {judged} statement{'s' if judged != 1 else ''} before line"
                     f" {revision.error_line}; review the rest by hand"),
            fix=fix_for("unrenderable-revision", Change(None), self.server.is_mysql),
        )

    def _acknowledged(self, found: list[Finding], allowances: Allowances) -> list[Finding]:
        result = []
        for finding in found:
            if finding.rule in self.settings.allow or allowances.allows(finding.rule,
                                                                        finding.line):
                finding = replace(finding, severity="allowed")
            elif (comment := allowances.without_reason(finding.rule, finding.line)) is not None:
                finding = replace(finding, message=(
                    f"{finding.message} (the `# runner: allow {finding.rule}` comment on line"
                    f" {comment.line} gives no reason after ` -- `, so it does not count)"))
            result.append(finding)
        return result


def _megabytes(size: int | None) -> str:
    if size is None:
        return "size unknown"
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} kB"
    return f"{size / (1024 * 1024):,.1f} MB"


def _display_path(path: str) -> str:
    """The revision file relative to the working directory when it is under it (as ruff
    prints paths, and GitHub annotations need them), else absolute."""
    absolute = os.path.abspath(path)
    try:
        relative = os.path.relpath(absolute)
    except ValueError:
        return absolute
    return absolute if relative.startswith("..") else relative

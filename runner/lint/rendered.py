"""A revision range rendered and parsed: each statement's changes, and which existing table
each name it uses stands for, before any fact is read.

`render_range` runs env.py offline (capture.py) and parses every statement once (parse.py);
its `tables` are what to read facts for. `render_sql` builds the same from SQL text, for a
statement judged without Alembic (tests, a SQL file).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runner.lint.capture import (
    CapturedRevision,
    CapturedStatement,
    OperationHint,
    RenderError,
    capture_range,
)
from runner.lint.changes import (
    AddForeignKey,
    Change,
    CreateIndex,
    CreateTable,
    DropIndex,
    DropTable,
    Harmless,
    RenameTable,
    TableName,
)

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from flask import Flask

DIALECT_FAMILIES = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql",
                    "sqlite": "sqlite"}


@dataclass(frozen=True)
class RenderedStatement:
    """One statement, what it changes, and the tables it names."""

    sql: str
    line: int | None
    transaction: int | None
    """The transaction it runs in (None: outside one)."""
    changes: tuple[Change, ...]
    origins: tuple[tuple[TableName, TableName | None], ...]
    """Each table the statement names, with the existing table whose facts apply (its name
    before a rename earlier in the range), or None for a table created earlier in the range."""
    hint: OperationHint | None = None

    def origin(self, table: TableName | None) -> TableName | None:
        """The existing table `table` stands for; None when it is new (or not named)."""
        for named, existing in self.origins:
            if named == table:
                return existing
        return None

    def is_new(self, table: TableName | None) -> bool:
        """Whether `table` was created earlier in the range."""
        return any(named == table and existing is None for named, existing in self.origins)


@dataclass(frozen=True)
class RenderedRevision:
    revision: str
    path: str
    statements: tuple[RenderedStatement, ...]
    error: str | None = None
    """Why it could not be rendered offline; its statements up to there are kept."""
    error_line: int | None = None


@dataclass(frozen=True)
class RenderedRange:
    """A range ready to be judged: `judge(rendered, facts, settings)`."""

    dialect: str
    revisions: tuple[RenderedRevision, ...]

    @property
    def tables(self) -> tuple[TableName, ...]:
        """The existing tables the statements touch (not those created earlier in the
        range), in order of first use: what `read_facts` should read."""
        seen: dict[TableName, None] = {}
        for revision in self.revisions:
            for statement in revision.statements:
                for _, existing in statement.origins:
                    if existing is not None:
                        seen.setdefault(existing)
        return tuple(seen)


def render_range(
    config: Config, script: ScriptDirectory, app: Flask, dialect: str,
    from_revision: str | None = None, to_revision: str | None = None,
) -> RenderedRange:
    """Render the revisions after `from_revision` (base) up to `to_revision` (head) through
    the app's env.py, offline, and parse them for `dialect` (the URL's: postgresql, mysql,
    mariadb or sqlite). RenderError when env.py itself cannot run offline, or renders for
    another database than `dialect`."""
    from runner.log import preserved_logging  # env.py's fileConfig() must not stay

    if dialect not in DIALECT_FAMILIES:
        raise ValueError(f"unknown dialect {dialect!r}: one of {', '.join(DIALECT_FAMILIES)}")
    with preserved_logging():
        captured = capture_range(config, script, app, from_revision, to_revision)
    if captured.dialect is not None and DIALECT_FAMILIES.get(
            captured.dialect, captured.dialect) != DIALECT_FAMILIES[dialect]:
        raise RenderError(f"env.py renders {captured.dialect} SQL, not {dialect}: lint the"
                          " range with the database URL the migrations run against")
    return assemble(captured.revisions, dialect)


def render_sql(
    revisions: Sequence[tuple[str, Sequence[str]]], dialect: str, transactional: bool = True,
    path: str = "<sql>",
) -> RenderedRange:
    """A range from SQL text: (revision, statements) pairs, each statement on its own line
    number (1, 2, ...), all in one transaction when `transactional`."""
    captured = [
        CapturedRevision(revision=revision, path=path, statements=tuple(
            CapturedStatement(sql=sql, line=number, transaction=1 if transactional else None)
            for number, sql in enumerate(statements, start=1)))
        for revision, statements in revisions
    ]
    return assemble(captured, dialect)


def assemble(revisions: Iterable[CapturedRevision], dialect: str) -> RenderedRange:
    """Parse every captured statement once and follow the tables through the range."""
    captured = list(revisions)
    tables = _TableHistory()
    rendered = []
    for revision, parsed in zip(captured, _parse_all(captured, dialect), strict=True):
        statements = []
        for statement, found in zip(revision.statements, parsed, strict=True):
            changes = tables.completed(found, statement.hint)
            statements.append(RenderedStatement(
                sql=statement.sql, line=statement.line, transaction=statement.transaction,
                changes=changes, origins=tables.follow(changes), hint=statement.hint,
            ))
        rendered.append(RenderedRevision(
            revision=revision.revision, path=revision.path, statements=tuple(statements),
            error=revision.error, error_line=revision.error_line,
        ))
    return RenderedRange(dialect=dialect, revisions=tuple(rendered))


def _parse_all(revisions: list[CapturedRevision],
               dialect: str) -> list[list[tuple[Change, ...]]]:
    """Each revision's statements parsed; sqlglot is imported only when there is one."""
    if not any(revision.statements for revision in revisions):
        return [[] for _ in revisions]
    from runner.lint.parse import parse_statement, quiet_sqlglot

    with quiet_sqlglot():
        return [_without_batch_rebuilds([parse_statement(statement.sql, dialect)
                                         for statement in revision.statements])
                for revision in revisions]


BATCH_PREFIX = "_alembic_tmp_"


def _without_batch_rebuilds(statements: list[tuple[Change, ...]]) -> list[tuple[Change, ...]]:
    """Alembic's batch mode (SQLite) rebuilds a table: CREATE TABLE _alembic_tmp_T, copy,
    DROP TABLE T, ALTER TABLE _alembic_tmp_T RENAME TO T. The drop and the rename are one
    table's rebuild, not a drop and a rename the running release would notice."""
    rebuilt = {change.new_name for changes in statements for change in changes
               if isinstance(change, RenameTable) and change.table and change.new_name
               and change.table.name == BATCH_PREFIX + change.new_name.name}
    if not rebuilt:
        return statements
    return [tuple(
        Harmless(change.table, what="batch table rebuild")
        if (isinstance(change, DropTable) and change.table in rebuilt) or (
            isinstance(change, RenameTable) and change.new_name in rebuilt)
        else change for change in changes) for changes in statements]


class _TableHistory:
    """Which tables the range has created or renamed so far, and which index is on which
    table."""

    def __init__(self) -> None:
        self.created: set[TableName] = set()
        self.renamed: dict[TableName, TableName] = {}
        """A name given by a rename in the range -> the existing table it names."""
        self.index_tables: dict[str, TableName] = {}

    def completed(self, changes: tuple[Change, ...],
                  hint: OperationHint | None) -> tuple[Change, ...]:
        """The changes with the table a DROP INDEX does not name filled in: from the
        operation, or from the CREATE INDEX earlier in the range."""
        filled = []
        for change in changes:
            if isinstance(change, DropIndex) and change.table is None:
                table = (hint.table if hint else None) or self.index_tables.get(change.index)
                change = dataclasses.replace(change, table=table)
            filled.append(change)
        return tuple(filled)

    def follow(self, changes: tuple[Change, ...]) -> tuple[tuple[TableName, TableName | None],
                                                           ...]:
        """Each table the changes name with its origin, then apply the changes."""
        origins: dict[TableName, TableName | None] = {}
        for change in changes:
            for table in _named_tables(change):
                origins.setdefault(table, self._origin(table))
        for change in changes:
            self._apply(change)
        return tuple(origins.items())

    def _origin(self, table: TableName) -> TableName | None:
        if table in self.created:
            return None
        return self.renamed.get(table, table)

    def _apply(self, change: Change) -> None:
        if isinstance(change, CreateTable) and change.table is not None:
            self.created.add(change.table)
            self.renamed.pop(change.table, None)
        elif isinstance(change, CreateIndex) and change.table is not None:
            self.index_tables[change.index] = change.table
        elif isinstance(change, RenameTable) and change.table and change.new_name:
            origin = self._origin(change.table)
            if origin is None:
                self.created.add(change.new_name)
            else:
                self.renamed[change.new_name] = origin
            self.created.discard(change.table)


def _named_tables(change: Change) -> list[TableName]:
    """The existing tables a change uses (a CREATE TABLE: only those it references)."""
    if isinstance(change, CreateTable):
        return list(change.references)
    tables = [change.table] if change.table is not None else []
    if isinstance(change, AddForeignKey) and change.referenced is not None:
        tables.append(change.referenced)
    return tables

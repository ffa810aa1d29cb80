"""Render a revision range to SQL with Alembic's offline mode, one statement at a time.

env.py runs as `runner sql` runs it (`as_sql=True`), but nothing is written out: the
MigrationContext's impl is wrapped on the instance (no Alembic class is patched), so each
statement is caught as it is emitted, with

- the revision that emits it: Alembic's `-- Running upgrade A -> B` marker starts each one;
- the line of the `op.*` call in that revision's file: the innermost Python frame running
  in the revision module (its globals are the module's: the file's path cannot be mistaken);
- whether it runs inside the migration's transaction: offline, Alembic writes BEGIN/COMMIT
  for transactional DDL, and COMMIT ... BEGIN around an `autocommit_block()`;
- what the operation knew that its SQL does not say (`existing_type` of an
  `op.alter_column`, the table of an `op.drop_index`).

Statements emitted outside any revision (the version table's bookkeeping) are left out. A
revision that raises while being rendered (it reads data through `op.get_bind()`) is kept
with the statements it emitted and its error, and rendering resumes after it.
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from alembic.runtime.environment import EnvironmentContext

from runner.lint.changes import TableName

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.ddl.impl import DefaultImpl
    from alembic.runtime.migration import MigrationContext
    from alembic.script import Script, ScriptDirectory
    from flask import Flask

RUNNING_MARKER = "-- Running "
TRANSACTION_STARTS = frozenset({"BEGIN", "BEGIN TRANSACTION", "START TRANSACTION"})


class RenderError(Exception):
    """The range cannot be rendered offline for a reason that is not one revision's (env.py
    itself fails, an unknown revision): nothing can be judged."""


@dataclass(frozen=True)
class OperationHint:
    """What an Alembic operation knew that the SQL it emitted does not say."""

    table: TableName | None = None
    """The table of an `op.drop_index` (PostgreSQL's DROP INDEX does not name it)."""
    existing_type: str | None = None
    """`op.alter_column(existing_type=...)`, compiled for the dialect."""
    existing_nullable: bool | None = None
    nullable: bool | None = None
    """`op.alter_column(nullable=...)`: what the operation asks for."""
    type_given: bool = False
    """Whether `op.alter_column` was given `type_`."""


@dataclass(frozen=True)
class CapturedStatement:
    """One statement as Alembic emitted it (without its terminator)."""

    sql: str
    line: int | None
    transaction: int | None
    """Which transaction it runs in (a number that grows at each BEGIN); None outside one
    (an `autocommit_block()`, or a database without transactional DDL)."""
    hint: OperationHint | None = None


@dataclass(frozen=True)
class CapturedRevision:
    """One revision's statements, in order; `error` when it could not be rendered offline."""

    revision: str
    path: str
    statements: tuple[CapturedStatement, ...]
    error: str | None = None
    error_line: int | None = None


@dataclass(frozen=True)
class CapturedRange:
    revisions: tuple[CapturedRevision, ...]
    dialect: str | None
    """The SQLAlchemy dialect env.py configured (postgresql, mysql, mariadb, sqlite)."""


def capture_range(
    config: Config, script: ScriptDirectory, app: Flask,
    from_revision: str | None = None, to_revision: str | None = None,
) -> CapturedRange:
    """Render the revisions after `from_revision` (base) up to `to_revision` (the heads) through
    env.py in offline mode, in the app's context; RenderError when env.py itself fails.

    Runs in a scratch working directory: a multi-database env.py opens one `<bind>.sql` file
    per database where it runs.
    """
    destination = to_revision or "heads"
    starting = from_revision
    revisions: list[CapturedRevision] = []
    dialect: str | None = None
    transactions = 0
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        while True:
            recorder = _Recorder(script, transactions)
            try:
                with app.app_context():
                    _run_offline(config, script, recorder, starting, destination)
            except Exception as exc:
                failed = recorder.fail(exc)
                if failed is None:
                    raise RenderError(
                        f"the migrations cannot be rendered as offline SQL: {type(exc).__name__}:"
                        f" {_one_line(exc)}") from exc
                revisions.extend(recorder.finished())
                dialect = dialect or recorder.dialect
                transactions = recorder.transactions
                # Go on with the revisions after the one that failed.
                starting = failed
                continue
            revisions.extend(recorder.finished())
            return CapturedRange(revisions=tuple(revisions), dialect=dialect or recorder.dialect)


def _run_offline(
    config: Config, script: ScriptDirectory, recorder: _Recorder, starting: str | None,
    destination: str,
) -> None:
    def upgrade(current: Any, context: MigrationContext) -> Any:
        # What alembic.command.upgrade passes env.py: the steps to apply.
        return script._upgrade_revs(destination, current)

    environment = EnvironmentContext(config, script, fn=upgrade, as_sql=True,
                                     starting_rev=starting, destination_rev=destination)
    configure = environment.configure

    def configure_and_attach(*args: Any, **kwargs: Any) -> None:
        # Nothing is written anywhere: a multi-database env.py passes its own file.
        kwargs["output_buffer"] = io.StringIO()
        kwargs.pop("output_encoding", None)
        configure(*args, **kwargs)
        recorder.attach(environment.get_context().impl)

    # On this instance only: env.py's `context.configure` is a proxy to the instance's
    # attribute, so every MigrationContext it makes reports to the recorder.
    setattr(environment, "configure", configure_and_attach)  # noqa: B010
    with environment:
        script.run_env()


@dataclass
class _Open:
    script: Script
    statements: list[CapturedStatement] = field(default_factory=list)


class _Recorder:
    """Receives what the impl emits and keeps it per revision."""

    def __init__(self, script: ScriptDirectory, transactions: int = 0) -> None:
        self._scripts = script
        self.revisions: list[CapturedRevision] = []
        self.dialect: str | None = None
        self._open: _Open | None = None
        self._globals: dict[str, Any] | None = None
        self._transaction: int | None = None
        self.transactions = transactions
        """How many transactions were begun so far (numbers them)."""
        self._hint: OperationHint | None = None
        self._terminator = ";"

    def attach(self, impl: DefaultImpl) -> None:
        """Wrap this impl instance's output and the operations whose SQL loses information."""
        self.dialect = impl.dialect.name
        self._terminator = impl.command_terminator or ""
        self._transaction = None
        setattr(impl, "static_output", self._output)  # noqa: B010 (an instance, not the class)
        alter_column = impl.alter_column
        drop_index = impl.drop_index

        def hinted_alter_column(table_name: str, column_name: str, **kw: Any) -> None:
            hint = OperationHint(
                existing_type=_compiled(kw.get("existing_type"), impl),
                existing_nullable=kw.get("existing_nullable"), nullable=kw.get("nullable"),
                type_given=kw.get("type_") is not None,
            )
            with self._hinted(hint):
                alter_column(table_name, column_name, **kw)

        def hinted_drop_index(index: Any, **kw: Any) -> None:
            table = getattr(index, "table", None)
            hint = OperationHint(
                table=TableName(table.schema, table.name) if table is not None else None)
            with self._hinted(hint):
                drop_index(index, **kw)

        setattr(impl, "alter_column", hinted_alter_column)  # noqa: B010
        setattr(impl, "drop_index", hinted_drop_index)  # noqa: B010

    @contextlib.contextmanager
    def _hinted(self, hint: OperationHint) -> Iterator[None]:
        self._hint = hint
        try:
            yield
        finally:
            self._hint = None

    def _output(self, text: str) -> None:
        stripped = text.strip()
        if stripped.startswith(RUNNING_MARKER):
            self._start(stripped)
            return
        bare = stripped.removesuffix(self._terminator).strip() if self._terminator else stripped
        if bare.upper() in TRANSACTION_STARTS:
            self.transactions += 1
            self._transaction = self.transactions
        elif bare.upper() == "COMMIT":
            self._transaction = None
        elif bare and self._open is not None:
            line = self._line(sys._getframe(1))
            if line is not None:
                self._open.statements.append(
                    CapturedStatement(sql=bare, line=line, transaction=self._transaction,
                                      hint=self._hint))

    def _start(self, marker: str) -> None:
        """A new revision begins: `-- Running upgrade A -> B` names it last."""
        self._close()
        revision_id = marker.rsplit("->", 1)[-1].strip()
        found = self._scripts.get_revision(revision_id)
        if found is None:
            return
        self._open = _Open(found)
        self._globals = vars(found.module)

    def _line(self, frame: FrameType | None) -> int | None:
        """The line the current revision's module is at, innermost first; None when the
        statement does not come from it."""
        while frame is not None:
            if frame.f_globals is self._globals:
                return frame.f_lineno
            frame = frame.f_back
        return None

    def _close(self, error: str | None = None, error_line: int | None = None) -> None:
        if self._open is not None:
            self.revisions.append(CapturedRevision(
                revision=self._open.script.revision, path=self._open.script.path,
                statements=tuple(self._open.statements), error=error, error_line=error_line,
            ))
        self._open = None
        self._globals = None

    def finished(self) -> list[CapturedRevision]:
        """Every revision rendered, the last one closed."""
        self._close()
        return self.revisions

    def fail(self, exc: BaseException) -> str | None:
        """Record `exc` against the revision it was raised in and return that revision;
        None when it was not raised inside a revision."""
        if self._open is None:
            return None
        line = _innermost_line(exc.__traceback__, self._globals)
        if line is None:
            return None
        revision = self._open.script.revision
        self._close(error=f"{type(exc).__name__}: {_one_line(exc)}", error_line=line)
        return revision


def _innermost_line(tb: TracebackType | None, module_globals: dict[str, Any] | None) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_globals is module_globals:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _compiled(type_: Any, impl: DefaultImpl) -> str | None:
    """A SQLAlchemy type as the dialect writes it; None when absent or not compilable."""
    if type_ is None:
        return None
    from sqlalchemy.types import to_instance

    try:
        return str(to_instance(type_).compile(dialect=impl.dialect))
    except Exception:  # a custom type that does not compile offline: judged without it
        return None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]



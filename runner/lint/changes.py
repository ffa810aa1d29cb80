"""What a migration statement does to the schema, in words that do not depend on the dialect.

parse.py turns each rendered SQL statement into these; effects.py says what the server does
for each, rules.py which rule it breaks. Nothing here imports sqlglot.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TableName:
    """A table as a statement names it: `schema` None is the connection's default schema."""

    schema: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


@dataclass(frozen=True)
class ColumnType:
    """A column type as parsed: `name` is sqlglot's type name (VARCHAR, TEXT, INT, BIGINT,
    DECIMAL, TIMESTAMP, TIMESTAMPTZ, ...), `params` its numeric arguments (length, or
    precision and scale), `charset` the MySQL CHARACTER SET the definition names."""

    name: str
    params: tuple[int, ...] = ()
    charset: str | None = None
    sql: str = ""
    """The type as the dialect writes it, for messages."""


@dataclass(frozen=True)
class DefaultValue:
    """A column's server-side default or generated value, as the statement writes it."""

    sql: str
    functions: frozenset[str] = frozenset()
    """The lower-case names of the functions it calls (now, gen_random_uuid, uuid, ...)."""
    reads_columns: bool = False
    """Whether it refers to other columns of the row (a per-row value)."""
    generated: str | None = None
    """'identity', 'serial', 'auto_increment', 'stored' or 'virtual' for a generated value;
    None for a plain DEFAULT."""


@dataclass(frozen=True)
class Change:
    """One thing a statement does to one table. Subclasses say which."""

    table: TableName | None


@dataclass(frozen=True)
class CreateTable(Change):
    references: tuple[TableName, ...] = ()
    """The tables its foreign keys point at."""


@dataclass(frozen=True)
class CreateIndex(Change):
    index: str = ""
    columns: tuple[str, ...] = ()
    unique: bool = False
    concurrently: bool = False
    special: str | None = None
    """MySQL FULLTEXT or SPATIAL."""


@dataclass(frozen=True)
class DropIndex(Change):
    index: str = ""
    concurrently: bool = False


@dataclass(frozen=True)
class AddColumn(Change):
    column: str = ""
    type: ColumnType | None = None
    not_null: bool = False
    default: DefaultValue | None = None


@dataclass(frozen=True)
class AlterColumnType(Change):
    """PostgreSQL's ALTER COLUMN ... TYPE."""

    column: str = ""
    type: ColumnType | None = None
    using: bool = False


@dataclass(frozen=True)
class SetNotNull(Change):
    """PostgreSQL's ALTER COLUMN ... SET NOT NULL."""

    column: str = ""


@dataclass(frozen=True)
class RedefineColumn(Change):
    """MySQL's MODIFY / CHANGE: the whole column definition, written again.

    What actually changes (type, nullability, name) depends on the old definition, which the
    statement does not carry: the judge compares with the operation's `existing_*` arguments
    or the live column.
    """

    column: str = ""
    new_name: str | None = None
    type: ColumnType | None = None
    not_null: bool = False
    default: DefaultValue | None = None


@dataclass(frozen=True)
class AddForeignKey(Change):
    name: str | None = None
    columns: tuple[str, ...] = ()
    referenced: TableName | None = None
    referenced_columns: tuple[str, ...] = ()
    not_valid: bool = False


@dataclass(frozen=True)
class AddCheck(Change):
    name: str | None = None
    condition: str = ""
    not_valid: bool = False


@dataclass(frozen=True)
class AddUnique(Change):
    """ADD UNIQUE or ADD PRIMARY KEY; `using_index` when it adopts an index built before."""

    name: str | None = None
    columns: tuple[str, ...] = ()
    primary_key: bool = False
    using_index: str | None = None


@dataclass(frozen=True)
class ValidateConstraint(Change):
    name: str = ""


@dataclass(frozen=True)
class DropColumn(Change):
    column: str = ""


@dataclass(frozen=True)
class DropTable(Change):
    pass


@dataclass(frozen=True)
class RenameColumn(Change):
    column: str = ""
    new_name: str = ""


@dataclass(frozen=True)
class RenameTable(Change):
    new_name: TableName | None = None


@dataclass(frozen=True)
class Harmless(Change):
    """A statement understood and known not to matter here: DML, comments, defaults,
    dropping a constraint or NOT NULL, sequences, extensions, session settings."""

    what: str = ""


@dataclass(frozen=True)
class Unclassified(Change):
    """A statement the parser could not tell the effect of."""

    reason: str = ""

"""The rules: which change breaks which, said in words that name the table and its users.

Rule ids are squawk's, the same on every database; what differs per database is the reason
(effects.py) and the claims. Four kinds of rule:

- breaking: the running release cannot survive it (its queries fail): an error at any size;
- locking: a lock, rewrite or copy that makes the table's users wait: an error on a large
  or unknown table, a warning on a small one, nothing on an empty one;
- failing: the server refuses the statement where it runs: an error at any size;
- advisory: the linter could not judge: a warning.

A table created earlier in the same range breaks no rule (nothing uses it yet), except that
CONCURRENTLY inside a transaction fails on any table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from runner.lint.changes import (
    AddCheck,
    AddColumn,
    AddForeignKey,
    AddUnique,
    AlterColumnType,
    Change,
    CreateIndex,
    DefaultValue,
    DropColumn,
    DropIndex,
    DropTable,
    RedefineColumn,
    RenameColumn,
    RenameTable,
    SetNotNull,
    TableName,
    Unclassified,
    ValidateConstraint,
)
from runner.lint.effects import Effect, OldColumn, Redefinition, Server
from runner.lint.fixes import fix_for

BREAKING = frozenset({"adding-required-field", "ban-drop-column", "ban-drop-table",
                      "renaming-column", "renaming-table"})
LOCKING = frozenset({
    "require-concurrent-index-creation", "require-concurrent-index-deletion",
    "adding-field-with-default", "changing-column-type", "adding-not-nullable-field",
    "adding-foreign-key-constraint", "constraint-missing-not-valid",
    "disallowed-unique-constraint",
})
FAILING = frozenset({"ban-concurrent-index-creation-in-transaction"})
ADVISORY = frozenset({"unrenderable-revision", "unclassified-statement"})
RULES = tuple(sorted(BREAKING | LOCKING | FAILING | ADVISORY))

Sized = Callable[[TableName | None], str]
"""A table's name with its size, for messages: 'entry (26,000 rows)'."""


def _shown(table: TableName | None) -> str:
    """A table's name in a message."""
    return str(table) if table else "its table"


@dataclass(frozen=True)
class Situation:
    """A change, what the server does for it, and where it stands in the range."""

    change: Change
    effect: Effect
    server: Server
    new_table: bool = False
    """The table was created earlier in the range."""
    old: OldColumn | None = None
    redefinition: Redefinition | None = None
    type_effect: Effect | None = None
    """MySQL/MariaDB: what the type change of a MODIFY/CHANGE costs on its own."""
    held_lock: str | None = None
    """VALIDATE CONSTRAINT: the lock its ADD ... NOT VALID took earlier in this transaction."""


@dataclass(frozen=True)
class Hit:
    """A rule broken by one change."""

    rule: str
    table: TableName | None
    message: str
    fix: str
    claims: bool = True
    """Whether the finding states the statement's claims (lock, rewrite, algorithm)."""
    lock: str | None = None
    """A lock claim that is not the statement's own (one held from earlier)."""


def hits(situation: Situation, sized: Sized) -> list[Hit]:
    """The rules `situation.change` breaks."""
    if situation.effect.fails:
        return [_hit("ban-concurrent-index-creation-in-transaction", situation,
                     f"{situation.effect.fails}: PostgreSQL refuses it and the revision fails"
                     " (Alembic runs revisions inside a transaction)", claims=False)]
    if situation.new_table:
        return []
    if situation.server.is_mysql:
        return _mysql(situation, sized)
    if situation.server.backend == "postgresql":
        return _postgresql(situation, sized)
    # SQLite: one writer at a time, whatever the statement; only what breaks the release.
    return _breaking(situation)


def is_costly(effect: Effect) -> bool:
    """MySQL/MariaDB: a table copy, an in-place rebuild, or writes blocked."""
    return effect.algorithm == "COPY" or effect.rebuild or effect.blocks_writes


def _hit(rule: str, situation: Situation, message: str, claims: bool = True,
         lock: str | None = None) -> Hit:
    mysql = situation.server.is_mysql
    return Hit(rule=rule, table=situation.change.table, message=message,
               fix=fix_for(rule, situation.change, mysql), claims=claims, lock=lock)


def _everyone_waits(table: TableName | None) -> str:
    return f"every query on {_shown(table)}, reads included, waits"


def _postgresql(situation: Situation, sized: Sized) -> list[Hit]:
    change, effect = situation.change, situation.effect
    table = change.table
    name = _shown(table)
    found: list[Hit] = []
    if isinstance(change, CreateIndex) and not change.concurrently:
        found.append(_hit(
            "require-concurrent-index-creation", situation,
            f"CREATE INDEX {change.index} on {sized(table)} takes a SHARE lock for the whole"
            f" build: every INSERT, UPDATE and DELETE on {name} waits until it is done"))
    elif isinstance(change, DropIndex) and not change.concurrently:
        found.append(_hit(
            "require-concurrent-index-deletion", situation,
            f"DROP INDEX {change.index} takes an ACCESS EXCLUSIVE lock on {sized(table)}:"
            f" {_everyone_waits(table)} behind it, and it waits behind every open transaction"
            f" that used {name}"))
    elif isinstance(change, AddColumn):
        found.extend(_required_field(situation))
        if effect.rewrite and change.default is not None:
            found.append(_hit(
                "adding-field-with-default", situation,
                f"ADD COLUMN {change.column} with {_pg_default_words(change.default, situation)}"
                f" rewrites {sized(table)} under an ACCESS EXCLUSIVE lock:"
                f" {_everyone_waits(table)} for the whole rewrite"))
    elif isinstance(change, AlterColumnType) and effect.rewrite:
        old = situation.old.type.sql if situation.old and situation.old.type else None
        found.append(_hit(
            "changing-column-type", situation,
            f"ALTER COLUMN {change.column} TYPE {change.type.sql if change.type else '?'}"
            f"{f' (from {old})' if old else ' (from a type the linter does not know)'}"
            f"{' USING an expression' if change.using else ''} rewrites {sized(table)} under an"
            f" ACCESS EXCLUSIVE lock: {_everyone_waits(table)} for the whole rewrite"))
    elif isinstance(change, SetNotNull):
        found.append(_hit(
            "adding-not-nullable-field", situation,
            f"SET NOT NULL on {name}.{change.column} scans every row of {sized(table)} under"
            f" an ACCESS EXCLUSIVE lock: {_everyone_waits(table)} for the scan"))
    elif isinstance(change, AddForeignKey) and effect.scans:
        found.append(_hit(
            "adding-foreign-key-constraint", situation,
            f"{_named('ADD FOREIGN KEY', change.name)} on {sized(table)} checks every row while"
            f" it holds SHARE ROW EXCLUSIVE locks on {name} and {change.referenced}: writes to"
            " both wait for the whole scan"))
    elif isinstance(change, AddCheck) and effect.scans:
        found.append(_hit(
            "constraint-missing-not-valid", situation,
            f"{_named('ADD CHECK', change.name)} on {sized(table)} checks every row under an"
            f" ACCESS EXCLUSIVE lock: {_everyone_waits(table)} for the scan"))
    elif isinstance(change, AddUnique) and effect.scans:
        kind = "PRIMARY KEY" if change.primary_key else "UNIQUE"
        found.append(_hit(
            "disallowed-unique-constraint", situation,
            f"{_named('ADD ' + kind, change.name)} builds its index on {sized(table)} under an"
            f" ACCESS EXCLUSIVE lock: {_everyone_waits(table)} for the build"))
    elif isinstance(change, ValidateConstraint) and situation.held_lock:
        found.append(_hit(
            "constraint-missing-not-valid", situation,
            f"VALIDATE CONSTRAINT {change.name} runs in the transaction that added it NOT"
            f" VALID: the {situation.held_lock} lock the ADD took on {sized(table)} is held"
            " through the whole scan", lock=situation.held_lock))
    found.extend(_breaking(situation))
    return found


def _mysql(situation: Situation, sized: Sized) -> list[Hit]:
    change, effect = situation.change, situation.effect
    table = change.table
    name = _shown(table)
    found: list[Hit] = []
    if isinstance(change, CreateIndex) and is_costly(effect):
        found.append(_hit(
            "require-concurrent-index-creation", situation,
            f"{_named('CREATE ' + (change.special or '') + ' INDEX', change.index)}"
            f" {_mysql_cost(effect, table, sized)}"))
    elif isinstance(change, AddColumn):
        found.extend(_required_field(situation))
        if change.default is not None and is_costly(effect):
            found.append(_hit(
                "adding-field-with-default", situation,
                f"ADD COLUMN {change.column} with {_mysql_default_words(change.default)}"
                f" {_mysql_cost(effect, table, sized)}"))
    elif isinstance(change, RedefineColumn):
        what = situation.redefinition
        type_effect = situation.type_effect
        if what and what.type_changes and type_effect and is_costly(type_effect):
            old = situation.old.type.sql if situation.old and situation.old.type else None
            found.append(_hit(
                "changing-column-type", situation,
                f"changing {name}.{change.column} to {change.type.sql if change.type else '?'}"
                f"{f' (from {old})' if old else ' (from a type the linter does not know)'}"
                f" {_mysql_cost(effect, table, sized)}"))
        if what and what.sets_not_null:
            found.append(_hit(
                "adding-not-nullable-field", situation,
                f"making {name}.{change.column} NOT NULL {_mysql_cost(effect, table, sized)}"))
    elif isinstance(change, AddForeignKey) and is_costly(effect):
        found.append(_hit(
            "adding-foreign-key-constraint", situation,
            f"{_named('ADD FOREIGN KEY', change.name)} {_mysql_cost(effect, table, sized)}"))
    elif isinstance(change, AddCheck) and is_costly(effect):
        found.append(_hit(
            "constraint-missing-not-valid", situation,
            f"{_named('ADD CHECK', change.name)} {_mysql_cost(effect, table, sized)}"))
    elif isinstance(change, AddUnique) and is_costly(effect):
        kind = "PRIMARY KEY" if change.primary_key else "UNIQUE"
        found.append(_hit(
            "disallowed-unique-constraint", situation,
            f"ADD {kind} {_mysql_cost(effect, table, sized)}"))
    found.extend(_breaking(situation))
    return found


def _required_field(situation: Situation) -> list[Hit]:
    change = situation.change
    if not isinstance(change, AddColumn) or not change.not_null or change.default is not None:
        return []
    table = change.table
    name = _shown(table)
    also = "" if situation.server.is_mysql else (
        "; on a table with rows the statement itself fails")
    return [_hit(
        "adding-required-field", situation,
        f"ADD COLUMN {change.column} NOT NULL without a server default: the running release's"
        f" INSERTs into {name} do not set {change.column} and fail{also}", claims=False)]


def _breaking(situation: Situation) -> list[Hit]:
    change = situation.change
    table = change.table
    name = _shown(table)
    fail = "until every instance runs the new code"
    if isinstance(change, DropColumn):
        return [_hit("ban-drop-column", situation,
                     f"DROP COLUMN {change.column}: the running release still reads and writes"
                     f" {name}.{change.column}; its queries on {name} fail {fail}")]
    if isinstance(change, DropTable):
        return [_hit("ban-drop-table", situation,
                     f"DROP TABLE {name}: the running release's queries on {name} fail {fail},"
                     " and its data is gone")]
    if isinstance(change, RenameColumn) or (
        isinstance(change, RedefineColumn) and situation.redefinition
        and situation.redefinition.renames
    ):
        new = change.new_name if isinstance(change, (RenameColumn, RedefineColumn)) else ""
        column = change.column if isinstance(change, (RenameColumn, RedefineColumn)) else ""
        return [_hit("renaming-column", situation,
                     f"renaming {name}.{column} to {new}: the running release's queries that"
                     f" use {column} fail {fail}")]
    if isinstance(change, RenameTable):
        return [_hit("renaming-table", situation,
                     f"renaming {name} to {change.new_name}: the running release's queries on"
                     f" {name} fail {fail}")]
    if isinstance(change, Unclassified):
        return [_hit("unclassified-statement", situation,
                     f"the linter cannot tell what this statement does to the tables"
                     f" ({change.reason}): review its locks by hand", claims=False)]
    return []


def _named(statement: str, name: str | None) -> str:
    """'ADD CHECK ck_amount', or 'ADD CHECK' for an unnamed one."""
    words = " ".join(statement.split())
    return f"{words} {name}" if name else words


def _pg_default_words(default: DefaultValue, situation: Situation) -> str:
    if default.generated in ("identity", "serial"):
        return f"a value drawn per row ({default.generated})"
    if default.generated == "stored":
        return f"a stored generated value ({default.sql})"
    if not situation.server.at_least(11):
        version = ".".join(str(part) for part in situation.server.version)
        return f"a default ({default.sql}): before PostgreSQL 11 (the server is {version}) any" \
               " default"
    return f"the volatile default {default.sql}"


def _mysql_default_words(default: DefaultValue) -> str:
    if default.generated == "stored":
        return f"a stored generated value {default.sql}"
    if default.generated == "auto_increment":
        return "AUTO_INCREMENT"
    if default.reads_columns:
        return f"a default computed from the row, {default.sql},"
    return f"the default {default.sql}"


def _mysql_cost(effect: Effect, table: TableName | None, sized: Sized | None = None) -> str:
    """What a costly MySQL/MariaDB change does to the table's users."""
    sized_name = sized(table) if sized else _shown(table)
    name = _shown(table)
    if effect.algorithm == "COPY":
        return (f"copies all of {sized_name} with ALGORITHM=COPY: INSERT, UPDATE and DELETE"
                f" on {name} wait for the whole copy")
    if effect.blocks_writes and effect.rebuild:
        return (f"rebuilds all of {sized_name} with ALGORITHM={effect.algorithm} and"
                f" LOCK=SHARED at best: INSERT, UPDATE and DELETE on {name} wait until it is"
                " done")
    if effect.blocks_writes:
        return (f"on {sized_name} runs with ALGORITHM={effect.algorithm} and LOCK=SHARED at"
                f" best: INSERT, UPDATE and DELETE on {name} wait until it is done")
    return (f"rebuilds all of {sized_name} with ALGORITHM=INPLACE: writes go on, but the whole"
            " table is rewritten (replicas lag), and the change waits for every open"
            f" transaction on {name} when it starts and when it ends")

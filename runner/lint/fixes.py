"""The safe way to make each change, in Alembic terms: a finding's `fix`."""

from __future__ import annotations

import json

from runner.lint.changes import (
    AddCheck,
    AddColumn,
    AddForeignKey,
    AddUnique,
    AlterColumnType,
    Change,
    CreateIndex,
    DropColumn,
    DropIndex,
    RedefineColumn,
    RenameColumn,
    RenameTable,
    SetNotNull,
    ValidateConstraint,
)

AUTOCOMMIT = "with op.get_context().autocommit_block():"
ONLINE_TOOL = "an online schema change tool (gh-ost, pt-online-schema-change)"
ACKNOWLEDGE = "then acknowledge it in the revision: `# runner: allow {rule} -- <why it is safe>`"


def fix_for(rule: str, change: Change, mysql: bool) -> str:
    """The fix of `rule` broken by `change`, on MySQL/MariaDB or PostgreSQL."""
    table = _q(str(change.table)) if change.table else '"<table>"'
    bare_table = str(change.table) if change.table else "<table>"
    if rule == "require-concurrent-index-creation" and isinstance(change, CreateIndex):
        if mysql:
            return (f"build a {change.special or 'FULLTEXT'} index at a quiet time or with"
                    f" {ONLINE_TOOL}: the server blocks writes while it builds one")
        unique = ", unique=True" if change.unique else ""
        return (f"build it without blocking writes, outside the transaction: `{AUTOCOMMIT}`"
                f" then `op.create_index({_q(change.index)}, {table}, {_columns(change.columns)}"
                f"{unique}, postgresql_concurrently=True)`")
    if rule == "ban-concurrent-index-creation-in-transaction":
        return (f"run it outside the migration's transaction: put the operation inside"
                f" `{AUTOCOMMIT}`")
    if rule == "require-concurrent-index-deletion" and isinstance(change, DropIndex):
        return (f"`{AUTOCOMMIT}` then `op.drop_index({_q(change.index)}, table_name={table},"
                f" postgresql_concurrently=True)`")
    if rule == "adding-field-with-default" and isinstance(change, AddColumn):
        column = _q(change.column)
        return (f"add {column} without that default (`op.add_column({table}, sa.Column({column},"
                f" ..., nullable=True))`), give new rows the default with"
                f" `op.alter_column({table}, {column}, server_default=...)`, and fill the existing"
                " rows in batches in later revisions")
    if rule == "adding-required-field" and isinstance(change, AddColumn):
        column = _q(change.column)
        return (f"give it a server default (`sa.Column({column}, ..., nullable=False,"
                f" server_default=...)`), or add it nullable, backfill it, and make it NOT NULL"
                " in a later release, once every instance writes it")
    if rule == "changing-column-type" and isinstance(change, (AlterColumnType, RedefineColumn)):
        new = change.type.sql if change.type else "the new type"
        return (f"expand and contract: add a new column of type {new}, write both from the app,"
                f" backfill it in batches, switch reads to it, and drop {_q(change.column)} in a"
                " later release")
    if rule == "adding-not-nullable-field" and isinstance(change, (SetNotNull, RedefineColumn)):
        if mysql:
            return (f"make sure no row is NULL, then run it at a quiet time or with {ONLINE_TOOL};"
                    " or keep the column nullable and enforce it in the app")
        check = _q(f"ck_{change.table.name if change.table else 'table'}_{change.column}"
                   "_not_null")
        condition = _q(change.column + " IS NOT NULL")
        return (f"`op.create_check_constraint({check}, {table}, {condition},"
                f" postgresql_not_valid=True)` now; in a later revision"
                f" `op.execute('ALTER TABLE {bare_table} VALIDATE CONSTRAINT ...')`, then"
                f" `op.alter_column({table}, {_q(change.column)}, nullable=False)` (PostgreSQL"
                " 12+ skips the scan given the valid check) and drop the check")
    if rule == "adding-foreign-key-constraint" and isinstance(change, AddForeignKey):
        if mysql:
            return ("check the existing rows first, then add it with foreign key checks off, so"
                    " that the server can use ALGORITHM=INPLACE: `op.execute('SET"
                    " foreign_key_checks = 0')` before it and `= 1` after (existing rows are not"
                    " checked)")
        name = _q(change.name or "fk_...")
        referenced = _q(str(change.referenced)) if change.referenced else '"<table>"'
        return (f"`op.create_foreign_key({name}, {table}, {referenced},"
                f" {_columns(change.columns)}, {_columns(change.referenced_columns)},"
                f" postgresql_not_valid=True)` now (no scan), then `op.execute('ALTER TABLE"
                f" {bare_table} VALIDATE CONSTRAINT {change.name or '...'}')` in a later revision"
                " (SHARE UPDATE EXCLUSIVE: writes go on)")
    if rule == "constraint-missing-not-valid":
        if isinstance(change, ValidateConstraint):
            return (f"validate it in a revision of a later release, or inside `{AUTOCOMMIT}`,"
                    " so that the lock the ADD took is released before the scan")
        if mysql:
            return ("MySQL and MariaDB have no NOT VALID: enforce it in the app, and add the"
                    f" constraint at a quiet time or with {ONLINE_TOOL}")
        name = change.name if isinstance(change, AddCheck) and change.name else "ck_..."
        return (f"`op.create_check_constraint({_q(name)}, {table}, ...,"
                f" postgresql_not_valid=True)` now (no scan), then `op.execute('ALTER TABLE"
                f" {bare_table} VALIDATE CONSTRAINT {name}')` in a later revision")
    if rule == "disallowed-unique-constraint" and isinstance(change, AddUnique):
        if mysql:
            return (f"add the primary key when the table is created, or use {ONLINE_TOOL}")
        name = change.name or "uq_..."
        kind = "PRIMARY KEY" if change.primary_key else "UNIQUE"
        return (f"build the index first: `{AUTOCOMMIT}` then `op.create_index({_q(name)},"
                f" {table}, {_columns(change.columns)}, unique=True,"
                f" postgresql_concurrently=True)`; then `op.execute('ALTER TABLE {bare_table}"
                f" ADD CONSTRAINT {name} {kind} USING INDEX {name}')`")
    if rule == "ban-drop-column" and isinstance(change, DropColumn):
        return (f"expand and contract: first release code that no longer reads or writes"
                f" {_q(change.column)} (take it out of the model), then drop it in a revision of"
                " a later release")
    if rule == "ban-drop-table":
        return ("expand and contract: first release code that no longer uses the table, then"
                " drop it in a revision of a later release")
    if rule == "renaming-column" and isinstance(change, (RenameColumn, RedefineColumn)):
        new = _q(change.new_name or "<new name>")
        return (f"expand and contract: add {new}, write both columns from the app, backfill"
                f" {new} from {_q(change.column)}, switch reads, and drop the old column in a"
                " later release")
    if rule == "renaming-table" and isinstance(change, RenameTable):
        new = str(change.new_name) if change.new_name else "<new name>"
        return (f"expand and contract: create {new} and move the code to it (on PostgreSQL,"
                f" renaming and leaving a view named {bare_table} keeps the running release"
                " working), then drop the old name in a later release")
    if rule == "unrenderable-revision":
        return ("review it by hand (or move its data reads into a revision of their own), "
                + ACKNOWLEDGE.format(rule=rule))
    return "review it by hand, " + ACKNOWLEDGE.format(rule=rule)


def _q(text: str) -> str:
    """A Python string literal, as the revision would write it."""
    return json.dumps(text)


def _columns(columns: tuple[str, ...]) -> str:
    return "[" + ", ".join(_q(column) for column in columns) + "]" if columns else "[...]"

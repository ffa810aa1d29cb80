"""Statements as Alembic renders them (and as people write them in op.execute), parsed into
changes with sqlglot's PostgreSQL and MySQL dialects."""

from __future__ import annotations

import pytest

from runner.lint.changes import (
    AddCheck,
    AddColumn,
    AddForeignKey,
    AddUnique,
    AlterColumnType,
    Change,
    ColumnType,
    CreateIndex,
    CreateTable,
    DefaultValue,
    DropColumn,
    DropIndex,
    DropTable,
    Harmless,
    RedefineColumn,
    RenameColumn,
    RenameTable,
    SetNotNull,
    TableName,
    Unclassified,
    ValidateConstraint,
)
from runner.lint.parse import parse_statement, parse_type, quiet_sqlglot

ENTRY = TableName(None, "entry")
ACCOUNT = TableName(None, "account")


def parsed(sql: str, dialect: str = "postgresql") -> tuple[Change, ...]:
    with quiet_sqlglot():
        return parse_statement(sql, dialect)


POSTGRESQL = [
    ("CREATE INDEX ix ON entry (account_id)",
     CreateIndex(ENTRY, index="ix", columns=("account_id",))),
    ('CREATE UNIQUE INDEX CONCURRENTLY "Ix" ON "Entry" (a, b)',
     CreateIndex(TableName(None, "Entry"), index="Ix", columns=("a", "b"), unique=True,
                 concurrently=True)),
    ("CREATE INDEX IF NOT EXISTS ix ON s.entry USING btree (a) WHERE a > 0",
     CreateIndex(TableName("s", "entry"), index="ix", columns=("a",))),
    ("DROP INDEX CONCURRENTLY ix", DropIndex(None, index="ix", concurrently=True)),
    ("ALTER TABLE entry ADD COLUMN status VARCHAR(20) NOT NULL",
     AddColumn(ENTRY, column="status", type=ColumnType("VARCHAR", (20,), sql="VARCHAR(20)"),
               not_null=True)),
    ("ALTER TABLE entry ADD COLUMN u UUID DEFAULT gen_random_uuid()",
     AddColumn(ENTRY, column="u", type=ColumnType("UUID", sql="UUID"),
               default=DefaultValue("GEN_RANDOM_UUID()", frozenset({"gen_random_uuid"})))),
    ("ALTER TABLE entry ADD COLUMN n BIGSERIAL",
     AddColumn(ENTRY, column="n", type=ColumnType("BIGSERIAL", sql="BIGSERIAL"),
               default=DefaultValue("BIGSERIAL", frozenset({"nextval"}), generated="serial"))),
    ("ALTER TABLE entry ALTER COLUMN amount TYPE BIGINT USING amount::bigint",
     AlterColumnType(ENTRY, column="amount", type=ColumnType("BIGINT", sql="BIGINT"),
                     using=True)),
    ("ALTER TABLE entry ALTER COLUMN name SET NOT NULL", SetNotNull(ENTRY, column="name")),
    ("ALTER TABLE entry ALTER COLUMN name DROP NOT NULL", Harmless(ENTRY, what="DROP NOT NULL")),
    ("ALTER TABLE entry RENAME name TO title",
     RenameColumn(ENTRY, column="name", new_name="title")),
    ("ALTER TABLE entry RENAME COLUMN name TO title",
     RenameColumn(ENTRY, column="name", new_name="title")),
    ("ALTER TABLE entry RENAME TO entries",
     RenameTable(ENTRY, new_name=TableName(None, "entries"))),
    ("ALTER TABLE entry ADD CONSTRAINT fk FOREIGN KEY(a) REFERENCES public.account (id)"
     " NOT VALID",
     AddForeignKey(ENTRY, name="fk", columns=("a",), referenced=TableName("public", "account"),
                   referenced_columns=("id",), not_valid=True)),
    ("ALTER TABLE entry ADD CONSTRAINT ck CHECK (amount > 0)",
     AddCheck(ENTRY, name="ck", condition="amount > 0")),
    ("ALTER TABLE entry ADD CHECK (amount > 0) NOT VALID",
     AddCheck(ENTRY, condition="( amount > 0 ) NOT VALID", not_valid=True)),
    ("ALTER TABLE entry ADD CONSTRAINT uq UNIQUE (a, b)",
     AddUnique(ENTRY, name="uq", columns=("a", "b"))),
    ("ALTER TABLE entry ADD CONSTRAINT pk PRIMARY KEY (id)",
     AddUnique(ENTRY, name="pk", columns=("id",), primary_key=True)),
    ("ALTER TABLE ONLY entry ADD CONSTRAINT uq UNIQUE USING INDEX ix",
     AddUnique(ENTRY, name="uq", using_index="ix")),
    ("ALTER TABLE entry VALIDATE CONSTRAINT ck", ValidateConstraint(ENTRY, name="ck")),
    ("ALTER TABLE entry DROP COLUMN name", DropColumn(ENTRY, column="name")),
    ('CREATE TABLE tag (id SERIAL NOT NULL, e INTEGER, PRIMARY KEY (id),'
     ' FOREIGN KEY(e) REFERENCES entry (id))', CreateTable(TableName(None, "tag"), (ENTRY,))),
    ("UPDATE entry SET a = 1", Harmless(None, what="data change")),
    ("CREATE EXTENSION IF NOT EXISTS pgcrypto",
     Harmless(None, what="CREATE of a database object")),
]

MYSQL = [
    ("DROP INDEX ix ON entry", DropIndex(ENTRY, index="ix")),
    ("ALTER TABLE `user` CHANGE name title VARCHAR(20) NULL",
     RedefineColumn(TableName(None, "user"), column="name", new_name="title",
                    type=ColumnType("VARCHAR", (20,), sql="VARCHAR(20)"))),
    ("ALTER TABLE entry MODIFY name VARCHAR(20) CHARACTER SET latin1 NOT NULL DEFAULT 'x'",
     RedefineColumn(ENTRY, column="name",
                    type=ColumnType("VARCHAR", (20,), charset="latin1", sql="VARCHAR(20)"),
                    not_null=True, default=DefaultValue("'x'"))),
    ("RENAME TABLE entry TO entries", RenameTable(ENTRY, new_name=TableName(None, "entries"))),
    ("CREATE FULLTEXT INDEX ix ON entry (body)",
     CreateIndex(ENTRY, index="ix", special="FULLTEXT")),
    ("ALTER TABLE entry ADD UNIQUE KEY uq (a)", AddUnique(ENTRY, name="uq", columns=("a",))),
    ("ALTER TABLE entry ADD COLUMN s INTEGER AS (amount * 2) STORED",
     AddColumn(ENTRY, column="s", type=ColumnType("INT", sql="INT"), default=DefaultValue(
         "(amount * 2)", reads_columns=True, generated="stored"))),
    ("ALTER TABLE entry ADD COLUMN t DATETIME DEFAULT (now())",
     AddColumn(ENTRY, column="t", type=ColumnType("DATETIME", sql="DATETIME"),
               default=DefaultValue("(NOW())", frozenset({"now"})))),
    ("ALTER TABLE entry DROP FOREIGN KEY fk", Harmless(ENTRY, what="DROP FOREIGN KEY")),
    ("ALTER TABLE entry COMMENT 'entries'", Harmless(ENTRY, what="table comment")),
]


@pytest.mark.parametrize(("sql", "change"), POSTGRESQL, ids=[sql for sql, _ in POSTGRESQL])
def test_postgresql_statement(sql: str, change: Change) -> None:
    assert parsed(sql) == (change,)


@pytest.mark.parametrize(("sql", "change"), MYSQL, ids=[sql for sql, _ in MYSQL])
def test_mysql_statement(sql: str, change: Change) -> None:
    assert parsed(sql, "mysql") == (change,)


def test_several_actions_and_statements() -> None:
    assert [type(c) for c in parsed("ALTER TABLE entry ADD COLUMN x INT, DROP COLUMN y")] == [
        AddColumn, DropColumn]
    assert [type(c) for c in parsed("SELECT 1; DROP TABLE a, b;")] == [
        Harmless, DropTable, DropTable]


@pytest.mark.parametrize("sql", [
    "DO $$ BEGIN END $$", "ALTER TABLE entry SET (fillfactor = 70)", "TRUNCATE entry",
    "this is not sql (", "ALTER TABLE entry ENGINE=InnoDB",
])
def test_what_it_cannot_classify(sql: str) -> None:
    (change,) = parsed(sql, "mysql" if "ENGINE" in sql else "postgresql")
    assert isinstance(change, Unclassified)
    assert change.reason


def test_unparseable_reason_has_no_terminal_codes() -> None:
    (change,) = parsed("garbage here (")
    assert isinstance(change, Unclassified) and "\x1b" not in change.reason


@pytest.mark.parametrize(("text", "dialect", "expected"), [
    ("character varying(20)", "postgresql", ColumnType("VARCHAR", (20,), sql="VARCHAR(20)")),
    ("numeric(10,2)", "postgresql", ColumnType("DECIMAL", (10, 2), sql="DECIMAL(10, 2)")),
    ("timestamp with time zone", "postgresql", ColumnType("TIMESTAMPTZ", sql="TIMESTAMPTZ")),
    ("int(11)", "mysql", ColumnType("INT", (11,), sql="INT(11)")),
])
def test_types_as_servers_spell_them(text: str, dialect: str, expected: ColumnType) -> None:
    assert parse_type(text, dialect) == expected

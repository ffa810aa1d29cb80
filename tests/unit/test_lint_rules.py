"""The rules on statements, without a database: every rule raised and its safe twin left
alone, severity by table size, acknowledgements.

Facts are written by hand here (what `read_facts` would read); the claims themselves are
checked against the real servers in tests/integration/test_lint_claims.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from runner.lint import (
    ColumnFacts,
    DatabaseFacts,
    Finding,
    LintReport,
    LintSettings,
    TableFacts,
    TableName,
    judge,
    render_sql,
)
from runner.lint.rules import ADVISORY, BREAKING, FAILING, LOCKING, RULES

ENTRY = TableName(None, "entry")


def pg_columns(**columns: str) -> dict[str, ColumnFacts]:
    return {name: ColumnFacts(name=name, type=type_, nullable=True)
            for name, type_ in columns.items()}


def postgresql_facts(rows: int | None = 26_000, version: tuple[int, ...] = (15, 4),
                     timezone: str = "UTC") -> DatabaseFacts:
    columns = pg_columns(id="integer", amount="integer", name="character varying(20)",
                         body="text", price="numeric(10,2)", ts="timestamp without time zone")
    return DatabaseFacts(
        backend="postgresql", version=version, version_text=".".join(map(str, version)),
        timezone=timezone, tables={
            ENTRY: TableFacts(rows=rows, bytes=3_000_000, columns=columns),
            TableName(None, "account"): TableFacts(rows=100, bytes=16_384),
            TableName(None, "empty"): TableFacts(rows=0, bytes=8_192, counted=True),
        })


def mariadb_facts(rows: int | None = 26_000, version: tuple[int, ...] = (10, 11, 6),
                  backend: str = "mariadb") -> DatabaseFacts:
    def column(name: str, type_: str, nullable: bool = True) -> ColumnFacts:
        text = "varchar" in type_ or "text" in type_
        return ColumnFacts(name=name, type=type_, nullable=nullable,
                           charset="utf8mb4" if text else None, charset_bytes=4 if text else None)

    columns = {c.name: c for c in (
        column("id", "int(11)", False), column("amount", "int(11)", False),
        column("name", "varchar(20)"), column("code", "varchar(40)"),
        column("label", "varchar(100)"), column("legacy", "varchar(20)"),
    )}
    columns["legacy"] = ColumnFacts(name="legacy", type="varchar(20)", nullable=True,
                                    charset="latin1", charset_bytes=1)
    return DatabaseFacts(
        backend=backend, version=version, version_text=".".join(map(str, version)) + "-MariaDB",
        tables={
            ENTRY: TableFacts(rows=rows, bytes=3_000_000, columns=columns,
                              row_format="DYNAMIC", charset="utf8mb4", charset_bytes=4),
            TableName(None, "account"): TableFacts(rows=100, bytes=16_384),
        })


def lint(statements: Sequence[str], dialect: str = "postgresql",
         facts: DatabaseFacts | None = None, transactional: bool = True,
         settings: LintSettings | None = None, path: str = "<sql>") -> LintReport:
    rendered = render_sql([("rev1", statements)], dialect, transactional=transactional,
                          path=path)
    return judge(rendered, facts, settings)


def rules_at(report: LintReport, line: int | None = None) -> list[str]:
    return [f.rule for f in report.findings if line is None or f.line == line]


def only(report: LintReport, rule: str) -> Finding:
    matching = [f for f in report.findings if f.rule == rule]
    assert len(matching) == 1, [(f.rule, f.message) for f in report.findings]
    return matching[0]


# Each rule, and its safe twin, on PostgreSQL.

POSTGRESQL_RULES = [
    ("require-concurrent-index-creation", ["CREATE INDEX ix_entry_amount ON entry (amount)"]),
    ("ban-concurrent-index-creation-in-transaction",
     ["CREATE INDEX CONCURRENTLY ix_entry_amount ON entry (amount)"]),
    ("require-concurrent-index-deletion",
     ["CREATE INDEX ix_entry_amount ON entry (amount)", "DROP INDEX ix_entry_amount"]),
    ("adding-field-with-default",
     ["ALTER TABLE entry ADD COLUMN token UUID DEFAULT gen_random_uuid()"]),
    ("adding-required-field", ["ALTER TABLE entry ADD COLUMN status VARCHAR(20) NOT NULL"]),
    ("changing-column-type", ["ALTER TABLE entry ALTER COLUMN amount TYPE BIGINT"]),
    ("adding-not-nullable-field", ["ALTER TABLE entry ALTER COLUMN name SET NOT NULL"]),
    ("adding-foreign-key-constraint",
     ["ALTER TABLE entry ADD CONSTRAINT fk FOREIGN KEY(amount) REFERENCES account (id)"]),
    ("constraint-missing-not-valid",
     ["ALTER TABLE entry ADD CONSTRAINT ck CHECK (amount > 0)"]),
    ("disallowed-unique-constraint", ["ALTER TABLE entry ADD CONSTRAINT uq UNIQUE (name)"]),
    ("ban-drop-column", ["ALTER TABLE entry DROP COLUMN name"]),
    ("ban-drop-table", ["DROP TABLE entry"]),
    ("renaming-column", ["ALTER TABLE entry RENAME name TO title"]),
    ("renaming-table", ["ALTER TABLE entry RENAME TO entries"]),
    ("unclassified-statement", ["DO $$ BEGIN PERFORM 1; END $$"]),
]

POSTGRESQL_TWINS = [
    ("CONCURRENTLY in an autocommit_block",
     ["CREATE INDEX CONCURRENTLY ix_entry_amount ON entry (amount)"], False),
    ("DROP INDEX CONCURRENTLY in an autocommit_block",
     ["DROP INDEX CONCURRENTLY ix_entry_amount"], False),
    ("a constant server default on PostgreSQL 11+",
     ["ALTER TABLE entry ADD COLUMN status VARCHAR(20) DEFAULT 'new' NOT NULL"], True),
    ("a stable default (now())",
     ["ALTER TABLE entry ADD COLUMN created TIMESTAMP WITHOUT TIME ZONE DEFAULT now()"], True),
    ("a nullable column", ["ALTER TABLE entry ADD COLUMN note TEXT"], True),
    ("varchar widening", ["ALTER TABLE entry ALTER COLUMN name TYPE VARCHAR(200)"], True),
    ("varchar to text", ["ALTER TABLE entry ALTER COLUMN name TYPE TEXT"], True),
    ("numeric precision widening",
     ["ALTER TABLE entry ALTER COLUMN price TYPE NUMERIC(12, 2)"], True),
    ("timestamp to timestamptz in UTC",
     ["ALTER TABLE entry ALTER COLUMN ts TYPE TIMESTAMP WITH TIME ZONE"], True),
    ("DROP NOT NULL", ["ALTER TABLE entry ALTER COLUMN name DROP NOT NULL"], True),
    ("a foreign key added NOT VALID",
     ["ALTER TABLE entry ADD CONSTRAINT fk FOREIGN KEY(amount) REFERENCES account (id)"
      " NOT VALID"], True),
    ("a check added NOT VALID",
     ["ALTER TABLE entry ADD CONSTRAINT ck CHECK (amount > 0) NOT VALID"], True),
    ("VALIDATE in another transaction", ["ALTER TABLE entry VALIDATE CONSTRAINT ck"], True),
    ("a unique constraint over an index built before",
     ["ALTER TABLE entry ADD CONSTRAINT uq UNIQUE USING INDEX ix_entry_name"], True),
    ("a new table and its index",
     ["CREATE TABLE tag (id SERIAL NOT NULL, entry_id INTEGER, PRIMARY KEY (id),"
      " FOREIGN KEY(entry_id) REFERENCES entry (id))",
      "CREATE INDEX ix_tag_entry_id ON tag (entry_id)",
      "ALTER TABLE tag ADD COLUMN label VARCHAR(20) NOT NULL",
      "ALTER TABLE tag ALTER COLUMN label TYPE INTEGER USING 1",
      "ALTER TABLE tag ADD CONSTRAINT uq_tag_label UNIQUE (label)",
      "ALTER TABLE tag DROP COLUMN label", "ALTER TABLE tag RENAME TO tags",
      "ALTER TABLE tags RENAME entry_id TO entry", "DROP TABLE tags"], True),
    ("an index on an empty table", ["CREATE INDEX ix_empty_id ON empty (id)"], True),
    ("data changes and comments",
     ["UPDATE entry SET amount = 1 WHERE id = 1", "COMMENT ON TABLE entry IS 'entries'",
      "ALTER TABLE entry ALTER COLUMN name SET DEFAULT 'x'"], True),
]


@pytest.mark.parametrize(("rule", "statements"), POSTGRESQL_RULES,
                         ids=[rule for rule, _ in POSTGRESQL_RULES])
def test_postgresql_rule_is_raised(rule: str, statements: list[str]) -> None:
    report = lint(statements, facts=postgresql_facts())
    finding = only(report, rule)
    assert finding.line == len(statements)
    assert finding.severity == ("warning" if rule in ADVISORY else "error")
    assert finding.fix
    assert finding.statement == statements[-1]
    assert finding.algorithm is None


@pytest.mark.parametrize(("name", "statements", "transactional"), POSTGRESQL_TWINS,
                         ids=[name for name, _, _ in POSTGRESQL_TWINS])
def test_postgresql_safe_twin_is_not(name: str, statements: list[str],
                                     transactional: bool) -> None:
    report = lint(statements, facts=postgresql_facts(), transactional=transactional)
    assert report.findings == (), [f.message for f in report.findings]


def test_every_rule_has_a_case() -> None:
    assert {rule for rule, _ in POSTGRESQL_RULES} | {"unrenderable-revision"} == set(RULES)
    assert len(RULES) == 16
    assert set(RULES) == BREAKING | LOCKING | FAILING | ADVISORY


def test_postgresql_claims_of_each_finding() -> None:
    cases = {
        "CREATE INDEX ix ON entry (amount)": ("SHARE", False),
        "DROP INDEX ix": ("ACCESS EXCLUSIVE", False),
        "ALTER TABLE entry ADD COLUMN r FLOAT DEFAULT random()": ("ACCESS EXCLUSIVE", True),
        "ALTER TABLE entry ALTER COLUMN amount TYPE BIGINT": ("ACCESS EXCLUSIVE", True),
        "ALTER TABLE entry ALTER COLUMN name SET NOT NULL": ("ACCESS EXCLUSIVE", False),
        "ALTER TABLE entry ADD FOREIGN KEY(amount) REFERENCES account (id)":
            ("SHARE ROW EXCLUSIVE", False),
        "ALTER TABLE entry ADD CHECK (amount > 0)": ("ACCESS EXCLUSIVE", False),
        "ALTER TABLE entry ADD PRIMARY KEY (id)": ("ACCESS EXCLUSIVE", False),
        "ALTER TABLE entry DROP COLUMN name": ("ACCESS EXCLUSIVE", False),
        "DROP TABLE entry": ("ACCESS EXCLUSIVE", None),
    }
    for statement, claim in cases.items():
        report = lint(["CREATE INDEX ix ON entry (amount)", statement] if "DROP INDEX" in
                      statement else [statement], facts=postgresql_facts())
        finding = report.findings[-1]
        assert (finding.lock, finding.rewrite) == claim, statement


def test_claims_do_not_apply_to_a_failing_or_required_statement() -> None:
    for statement in ("CREATE INDEX CONCURRENTLY ix ON entry (amount)",
                      "ALTER TABLE entry ADD COLUMN status TEXT NOT NULL"):
        (finding,) = lint([statement], facts=postgresql_facts()).findings
        assert (finding.lock, finding.rewrite, finding.algorithm) == (None, None, None)


def test_concurrently_in_a_transaction_fails_even_on_a_new_or_empty_table() -> None:
    report = lint(["CREATE TABLE tag (id INTEGER)",
                   "CREATE INDEX CONCURRENTLY ix_tag ON tag (id)",
                   "CREATE INDEX CONCURRENTLY ix_empty ON empty (id)"], facts=postgresql_facts())
    assert rules_at(report) == ["ban-concurrent-index-creation-in-transaction"] * 2


def test_any_default_rewrites_before_postgresql_11() -> None:
    statement = "ALTER TABLE entry ADD COLUMN status VARCHAR(20) DEFAULT 'new'"
    assert lint([statement], facts=postgresql_facts(version=(11, 0))).findings == ()
    finding = only(lint([statement], facts=postgresql_facts(version=(10, 23))),
                   "adding-field-with-default")
    assert finding.rewrite is True
    assert "before PostgreSQL 11" in finding.message


def test_timestamp_to_timestamptz_rewrites_outside_utc() -> None:
    statement = "ALTER TABLE entry ALTER COLUMN ts TYPE TIMESTAMP WITH TIME ZONE"
    finding = only(lint([statement], facts=postgresql_facts(timezone="Europe/Paris")),
                   "changing-column-type")
    assert finding.rewrite is True


def test_a_type_change_from_an_unknown_type_counts_as_a_rewrite() -> None:
    # Offline, and no existing_type: the old type is unknown.
    finding = only(lint(["ALTER TABLE entry ALTER COLUMN name TYPE VARCHAR(200)"]),
                   "changing-column-type")
    assert "from a type the linter does not know" in finding.message


def test_varchar_shortening_rewrites() -> None:
    finding = only(lint(["ALTER TABLE entry ALTER COLUMN name TYPE VARCHAR(10)"],
                        facts=postgresql_facts()), "changing-column-type")
    assert "(from VARCHAR(20))" in finding.message


def test_validate_in_the_transaction_that_added_it_not_valid() -> None:
    add = "ALTER TABLE entry ADD CONSTRAINT ck CHECK (amount > 0) NOT VALID"
    validate = "ALTER TABLE entry VALIDATE CONSTRAINT ck"
    finding = only(lint([add, validate], facts=postgresql_facts()),
                   "constraint-missing-not-valid")
    assert (finding.line, finding.lock, finding.rewrite) == (2, "ACCESS EXCLUSIVE", False)
    fk = "ALTER TABLE entry ADD CONSTRAINT fk FOREIGN KEY(amount) REFERENCES account (id) NOT VALID"
    finding = only(lint([fk, "ALTER TABLE entry VALIDATE CONSTRAINT fk"],
                        facts=postgresql_facts()), "constraint-missing-not-valid")
    assert finding.lock == "SHARE ROW EXCLUSIVE"
    # In separate transactions (an autocommit_block, transaction_per_migration): fine.
    rendered = render_sql([("rev1", [add]), ("rev2", [validate])], "postgresql")
    first, second = rendered.revisions
    separate = replace(rendered, revisions=(first, replace(second, statements=tuple(
        replace(statement, transaction=2) for statement in second.statements))))
    assert judge(separate, postgresql_facts()).findings == ()


def test_renamed_table_keeps_its_facts() -> None:
    report = lint(["ALTER TABLE entry RENAME TO entries",
                   "CREATE INDEX ix_entries_amount ON entries (amount)"],
                  facts=postgresql_facts(rows=50), settings=LintSettings(allow=frozenset(
                      {"renaming-table"})))
    finding = only(report, "require-concurrent-index-creation")
    assert (finding.table, finding.rows, finding.severity) == ("entries", 50, "warning")


def test_tables_to_read_facts_for() -> None:
    rendered = render_sql([("rev1", [
        "CREATE TABLE tag (id INTEGER, entry_id INTEGER REFERENCES entry (id))",
        "CREATE INDEX ix_tag ON tag (id)",
        "ALTER TABLE entry ADD CONSTRAINT fk FOREIGN KEY(amount) REFERENCES account (id)",
        "ALTER TABLE entry RENAME TO entries", "ALTER TABLE entries ADD COLUMN x INTEGER",
        "ALTER TABLE s.other ADD COLUMN y INTEGER",
    ])], "postgresql")
    assert rendered.tables == (ENTRY, TableName(None, "account"), TableName("s", "other"))


# Severity


@pytest.mark.parametrize(("rows", "large", "severity"), [
    (26_000, 10_000, "error"), (10_000, 10_000, "error"), (9_999, 10_000, "warning"),
    (50, 10_000, "warning"), (50, 10, "error"), (1, 10_000, "warning"), (None, 10_000, "error"),
])
def test_severity_of_a_locking_rule_by_size(rows: int | None, large: int, severity: str) -> None:
    report = lint(["CREATE INDEX ix ON entry (amount)"], facts=postgresql_facts(rows=rows),
                  settings=LintSettings(large_table_rows=large))
    finding = only(report, "require-concurrent-index-creation")
    assert (finding.severity, finding.rows) == (severity, rows)
    assert report.has_errors is (severity == "error")


def test_empty_table_gives_no_locking_finding_but_still_breaking_ones() -> None:
    report = lint(["CREATE INDEX ix ON empty (id)", "ALTER TABLE empty ADD COLUMN s TEXT NOT NULL",
                   "ALTER TABLE empty DROP COLUMN id"], facts=postgresql_facts())
    assert rules_at(report) == ["adding-required-field", "ban-drop-column"]
    assert all(f.severity == "error" and f.rows == 0 for f in report.findings)


def test_offline_sizes_are_unknown_and_count_as_large() -> None:
    report = lint(["CREATE INDEX ix ON entry (amount)"])
    (finding,) = report.findings
    assert (finding.severity, finding.rows, finding.bytes) == ("error", None, None)
    assert "size unknown offline" in finding.message
    assert report.database.as_dict() == {"backend": "postgresql", "server_version": None,
                                         "connected": False, "assumed_version": "13"}


def test_a_table_missing_from_the_live_database_counts_as_large() -> None:
    (finding,) = lint(["CREATE INDEX ix ON ghost (id)"], facts=postgresql_facts()).findings
    assert finding.severity == "error"
    assert "not found in the database" in finding.message


def test_breaking_rules_are_errors_on_small_tables() -> None:
    report = lint(["ALTER TABLE entry DROP COLUMN name"], facts=postgresql_facts(rows=3),
                  settings=LintSettings(large_table_rows=10_000))
    assert only(report, "ban-drop-column").severity == "error"


def test_message_names_the_table_its_size_and_who_waits() -> None:
    (finding,) = lint(["CREATE INDEX ix_entry_amount ON entry (amount)"],
                      facts=postgresql_facts()).findings
    assert finding.message == (
        "CREATE INDEX ix_entry_amount on entry (26,000 rows, 2.9 MB) takes a SHARE lock for"
        " the whole build: every INSERT, UPDATE and DELETE on entry waits until it is done")
    assert "postgresql_concurrently=True" in (finding.fix or "")
    assert "autocommit_block" in (finding.fix or "")


# Acknowledging


def test_allowed_project_wide() -> None:
    report = lint(["CREATE INDEX ix ON entry (amount)", "ALTER TABLE entry DROP COLUMN name"],
                  facts=postgresql_facts(), settings=LintSettings(allow=frozenset(
                      {"require-concurrent-index-creation"})))
    assert [(f.rule, f.severity) for f in report.findings] == [
        ("require-concurrent-index-creation", "allowed"), ("ban-drop-column", "error")]


def revision_file(tmp_path: Path, body: str) -> str:
    path = tmp_path / "abc_rev.py"
    path.write_text(body)
    return str(path)


def test_allowed_by_a_comment_in_upgrade(tmp_path: Path) -> None:
    path = revision_file(tmp_path, (
        "def upgrade():\n"
        "    op.create_index('ix', 'entry', ['amount'])\n"
        "    # runner: allow require-concurrent-index-creation -- 300 rows, built at night\n"
        "    op.drop_column('entry', 'name')\n"))
    report = lint(["CREATE INDEX ix ON entry (amount)", "ALTER TABLE entry DROP COLUMN name"],
                  facts=postgresql_facts(), path=path)
    assert [(f.rule, f.severity) for f in report.findings] == [
        ("require-concurrent-index-creation", "allowed"), ("ban-drop-column", "error")]
    assert report.has_errors


def test_a_comment_on_the_line_of_a_helper_allows_that_line_only(tmp_path: Path) -> None:
    path = revision_file(tmp_path, (
        "def helper():\n"
        "    op.drop_column('entry', 'name')  # runner: allow ban-drop-column -- unused\n"
        "def upgrade():\n"
        "    helper()\n"))
    report = lint(["ALTER TABLE entry DROP COLUMN a", "ALTER TABLE entry DROP COLUMN b"],
                  facts=postgresql_facts(), path=path)
    assert [(f.line, f.severity) for f in report.findings] == [(1, "error"), (2, "allowed")]


def test_a_comment_without_a_reason_does_not_count(tmp_path: Path) -> None:
    path = revision_file(tmp_path, (
        "def upgrade():\n"
        "    op.drop_column('entry', 'name')  # runner: allow ban-drop-column\n"))
    (finding,) = lint(["ALTER TABLE entry DROP COLUMN name"], facts=postgresql_facts(),
                      path=path).findings
    assert finding.severity == "error"
    assert "on line 2 gives no reason" in finding.message


def test_allowed_fails_nothing() -> None:
    report = lint(["ALTER TABLE entry DROP COLUMN name"], facts=postgresql_facts(),
                  settings=LintSettings(allow=frozenset({"ban-drop-column"})))
    assert report.findings[0].severity == "allowed"
    assert not report.has_errors


# MySQL and MariaDB

MARIADB_RULES = [
    ("require-concurrent-index-creation", "CREATE FULLTEXT INDEX ix ON entry (name)", "INPLACE"),
    ("adding-field-with-default", "ALTER TABLE entry ADD COLUMN t CHAR(36) DEFAULT (uuid())",
     "COPY"),
    ("adding-required-field", "ALTER TABLE entry ADD COLUMN status VARCHAR(20) NOT NULL", None),
    ("changing-column-type", "ALTER TABLE entry MODIFY amount BIGINT NOT NULL", "COPY"),
    ("changing-column-type", "ALTER TABLE entry MODIFY code VARCHAR(64) NULL", "COPY"),
    ("changing-column-type", "ALTER TABLE entry MODIFY legacy VARCHAR(20) NULL", "COPY"),
    ("adding-not-nullable-field", "ALTER TABLE entry MODIFY name VARCHAR(20) NOT NULL",
     "INPLACE"),
    ("adding-foreign-key-constraint",
     "ALTER TABLE entry ADD CONSTRAINT fk FOREIGN KEY(amount) REFERENCES account (id)", "COPY"),
    ("constraint-missing-not-valid", "ALTER TABLE entry ADD CONSTRAINT ck CHECK (amount > 0)",
     "COPY"),
    ("disallowed-unique-constraint", "ALTER TABLE entry ADD PRIMARY KEY (id)", "INPLACE"),
    ("ban-drop-column", "ALTER TABLE entry DROP COLUMN name", "INSTANT"),
    ("ban-drop-table", "DROP TABLE entry", None),
    ("renaming-column", "ALTER TABLE entry CHANGE name title VARCHAR(20) NULL", "INSTANT"),
    ("renaming-column", "ALTER TABLE entry RENAME COLUMN name TO title", "INSTANT"),
    ("renaming-table", "RENAME TABLE entry TO entries", "INSTANT"),
    ("unclassified-statement", "ALTER TABLE entry CONVERT TO CHARACTER SET utf8mb4", None),
]

MARIADB_TWINS = [
    "CREATE INDEX ix ON entry (amount)", "CREATE UNIQUE INDEX ix ON entry (amount)",
    "DROP INDEX ix ON entry", "ALTER TABLE entry ADD CONSTRAINT uq UNIQUE (code)",
    "ALTER TABLE entry ADD COLUMN status VARCHAR(20) NOT NULL DEFAULT 'new'",
    "ALTER TABLE entry ADD COLUMN created DATETIME DEFAULT (now())",
    "ALTER TABLE entry ADD COLUMN note TEXT",
    "ALTER TABLE entry MODIFY name VARCHAR(200) NULL",
    "ALTER TABLE entry MODIFY label VARCHAR(300) NULL",
    "ALTER TABLE entry MODIFY name VARCHAR(20) NULL",
]


@pytest.mark.parametrize(("rule", "statement", "algorithm"), MARIADB_RULES,
                         ids=[f"{r}: {s}" for r, s, _ in MARIADB_RULES])
def test_mariadb_rule_is_raised(rule: str, statement: str, algorithm: str | None) -> None:
    finding = only(lint([statement], "mysql", mariadb_facts(), transactional=False), rule)
    assert (finding.algorithm, finding.lock, finding.rewrite) == (algorithm, None, None)


@pytest.mark.parametrize("statement", MARIADB_TWINS)
def test_mariadb_safe_twin_is_not(statement: str) -> None:
    report = lint([statement], "mysql", mariadb_facts(), transactional=False)
    assert report.findings == (), [f.message for f in report.findings]


@pytest.mark.parametrize(("backend", "version", "algorithm"), [
    ("mariadb", (10, 11, 6), "INSTANT"), ("mariadb", (10, 3, 39), "INPLACE"),
    ("mysql", (8, 0, 29), "INSTANT"), ("mysql", (8, 0, 28), "INPLACE"),
])
def test_drop_column_algorithm_by_server_version(backend: str, version: tuple[int, ...],
                                                  algorithm: str) -> None:
    finding = only(lint(["ALTER TABLE entry DROP COLUMN name"], "mysql",
                        mariadb_facts(version=version, backend=backend)), "ban-drop-column")
    assert finding.algorithm == algorithm


def test_add_column_before_instant_add_column_rebuilds() -> None:
    statement = "ALTER TABLE entry ADD COLUMN status VARCHAR(20) NOT NULL DEFAULT 'new'"
    assert lint([statement], "mysql", mariadb_facts(version=(10, 3, 2))).findings == ()
    finding = only(lint([statement], "mysql", mariadb_facts(version=(10, 2, 44))),
                   "adding-field-with-default")
    assert finding.algorithm == "INPLACE"
    assert "rebuilds all of entry" in finding.message


def test_mysql_varchar_widening_stays_in_place_within_its_length_bytes() -> None:
    mysql = mariadb_facts(version=(8, 0, 36), backend="mysql")
    assert lint(["ALTER TABLE entry MODIFY name VARCHAR(60) NULL"], "mysql", mysql).findings == ()
    finding = only(lint(["ALTER TABLE entry MODIFY name VARCHAR(200) NULL"], "mysql", mysql),
                   "changing-column-type")
    assert finding.algorithm == "COPY"


def test_alembic_hint_decides_what_a_modify_changes() -> None:
    """op.alter_column(..., nullable=False, existing_type=...) renders a MODIFY that repeats
    the type: only the nullability changes."""
    from runner.lint.capture import CapturedRevision, CapturedStatement, OperationHint
    from runner.lint.rendered import assemble

    hint = OperationHint(existing_type="INTEGER", existing_nullable=True, nullable=False)
    captured = CapturedRevision("rev1", "<sql>", (CapturedStatement(
        "ALTER TABLE entry MODIFY amount INTEGER NOT NULL", 1, None, hint),))
    report = judge(assemble([captured], "mysql"))
    assert rules_at(report) == ["adding-not-nullable-field"]
    assert report.findings[0].algorithm == "INPLACE"


def test_offline_mysql_assumes_a_version() -> None:
    report = lint(["ALTER TABLE entry DROP COLUMN name"], "mariadb", transactional=False)
    assert report.database.assumed_version == "10.11"
    assert report.findings[0].algorithm == "INSTANT"


def test_sqlite_judges_breaking_changes_only() -> None:
    report = lint(["CREATE INDEX ix ON entry (amount)", "ALTER TABLE entry DROP COLUMN name"],
                  "sqlite")
    assert rules_at(report) == ["ban-drop-column"]

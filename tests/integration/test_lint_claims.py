"""Every claim of the linter, checked against the real servers (one table of cases each).

For each case the linter judges a statement against a populated table (facts read from the
server), then the server runs it:

- PostgreSQL: inside a transaction, `pg_locks` gives the strongest mode our backend holds on
  the table and `pg_class.relfilenode` before and after tells a rewrite; rolled back. The
  finding's `lock` and `rewrite` must be exactly that.
- MariaDB: on a scratch copy of the table (`CREATE TABLE ... LIKE` + `INSERT ... SELECT`),
  `<statement>, ALGORITHM=<claim>` must succeed and the next cheaper algorithm must be refused;
  a finding that says the table is rebuilt must see NOCOPY refused, one that says writes wait
  must see LOCK=NONE refused.

A safe twin (rule None) must give no finding, and the server must show why (no rewrite; the
cheap algorithm accepted with LOCK=NONE). A breaking rule's `breaks` query, which the
running release would send, must work before the change and fail after it.

`pytest -s` prints the verified table (rule, database: claim, how) at the end of the module.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pymysql
import pytest
import sqlalchemy as sa

from runner.lint import DatabaseFacts, Finding, LintReport, LintSettings, judge, read_facts
from runner.lint.capture import CapturedRevision, CapturedStatement, OperationHint
from runner.lint.changes import TableName
from runner.lint.effects import ALGORITHMS
from runner.lint.rendered import assemble
from runner.lint.rules import BREAKING, LOCKING
from support import server_database

psycopg = pytest.importorskip("psycopg")

SETTINGS = LintSettings(large_table_rows=1000)
"""Our tables have 3,000 rows: every locking finding is an error."""


@dataclass(frozen=True)
class Case:
    """One statement judged and run. `rule` None: a safe twin, which must give no finding."""

    rule: str | None
    statement: str
    """As the linter reads it; `{table}` is the table (MariaDB: its scratch copy)."""
    before: tuple[str, ...] = ()
    """Run and judged before it, in the same transaction (PostgreSQL)."""
    table: str = "entry"
    transactional: bool = True
    refused: str | None = None
    """The server must refuse it, with this in the error."""
    breaks: str | None = None
    """A query of the running release that works before the change and fails after it."""
    index_table: bool = False
    """A DROP INDEX whose table the Alembic operation names (op.drop_index(table_name=...))."""
    accepts: str | None = None
    """MariaDB twin: the clause the server must accept (the reason there is no finding)."""
    timezone: str = "UTC"

    @property
    def label(self) -> str:
        return f"{self.rule or 'safe'}: {self.statement.format(table=self.table)}"


POSTGRESQL_SCHEMA = (
    # Autovacuum off for each table: the row estimates the claims are judged with stay those
    # of the ANALYZE below.
    "CREATE TABLE account (id serial PRIMARY KEY, name varchar(40) NOT NULL)"
    " WITH (autovacuum_enabled = false)",
    "INSERT INTO account (name) SELECT 'account ' || g FROM generate_series(1, 100) g",
    "CREATE TABLE entry (id integer PRIMARY KEY, account_id integer NOT NULL,"
    " amount integer NOT NULL, name varchar(20), price numeric(10, 2), ts timestamp,"
    " body text, code varchar(40), label varchar(100)) WITH (autovacuum_enabled = false)",
    "INSERT INTO entry SELECT g, 1 + g % 100, g, 'name ' || g, g / 100.0, now(), 'body ' || g,"
    " 'c' || g, 'l' || g FROM generate_series(1, 3000) g",
    "CREATE INDEX ix_entry_amount ON entry (amount)",
    "CREATE UNIQUE INDEX ix_entry_code ON entry (code)",
    "ALTER TABLE entry ADD CONSTRAINT ck_entry_positive CHECK (amount > 0) NOT VALID",
    "CREATE TABLE event (id integer NOT NULL, kind varchar(20))"
    " WITH (autovacuum_enabled = false)",
    "INSERT INTO event SELECT g, 'k' FROM generate_series(1, 3000) g",
    "ANALYZE",
)

POSTGRESQL_CASES = [
    Case("require-concurrent-index-creation",
         "CREATE INDEX ix_entry_account_id ON entry (account_id)"),
    Case("require-concurrent-index-creation", "CREATE UNIQUE INDEX ix_entry_id ON entry (id)"),
    Case(None, "CREATE INDEX CONCURRENTLY ix_entry_account_id ON entry (account_id)",
         transactional=False),
    Case("ban-concurrent-index-creation-in-transaction",
         "CREATE INDEX CONCURRENTLY ix_entry_account_id ON entry (account_id)",
         refused="cannot run inside a transaction block"),
    Case("ban-concurrent-index-creation-in-transaction",
         "DROP INDEX CONCURRENTLY ix_entry_amount", index_table=True,
         refused="cannot run inside a transaction block"),
    Case("require-concurrent-index-deletion", "DROP INDEX ix_entry_amount", index_table=True),
    Case(None, "DROP INDEX CONCURRENTLY ix_entry_amount", index_table=True,
         transactional=False),
    Case("adding-field-with-default",
         "ALTER TABLE entry ADD COLUMN token UUID DEFAULT gen_random_uuid()"),
    Case("adding-field-with-default",
         "ALTER TABLE entry ADD COLUMN score FLOAT DEFAULT random()"),
    Case("adding-field-with-default",
         "ALTER TABLE entry ADD COLUMN seen TIMESTAMP WITHOUT TIME ZONE"
         " DEFAULT clock_timestamp()"),
    Case("adding-field-with-default", "ALTER TABLE entry ADD COLUMN number SERIAL NOT NULL"),
    Case("adding-field-with-default",
         "ALTER TABLE entry ADD COLUMN number INTEGER GENERATED BY DEFAULT AS IDENTITY"),
    Case("adding-field-with-default",
         "ALTER TABLE entry ADD COLUMN doubled INTEGER GENERATED ALWAYS AS (amount * 2) STORED"),
    Case(None, "ALTER TABLE entry ADD COLUMN status VARCHAR(20) DEFAULT 'new' NOT NULL"),
    Case(None, "ALTER TABLE entry ADD COLUMN created TIMESTAMP WITHOUT TIME ZONE"
               " DEFAULT now()"),
    Case(None, "ALTER TABLE entry ADD COLUMN note VARCHAR(20)"),
    Case("adding-required-field", "ALTER TABLE entry ADD COLUMN status VARCHAR(20) NOT NULL",
         refused="contains null values"),
    Case("changing-column-type", "ALTER TABLE entry ALTER COLUMN amount TYPE BIGINT"),
    Case("changing-column-type",
         "ALTER TABLE entry ALTER COLUMN amount TYPE BIGINT USING amount::bigint"),
    Case("changing-column-type", "ALTER TABLE entry ALTER COLUMN name TYPE VARCHAR(10)"),
    Case("changing-column-type", "ALTER TABLE entry ALTER COLUMN body TYPE VARCHAR(50)"),
    Case("changing-column-type", "ALTER TABLE entry ALTER COLUMN price TYPE NUMERIC(12, 3)"),
    Case("changing-column-type",
         "ALTER TABLE entry ALTER COLUMN ts TYPE TIMESTAMP WITH TIME ZONE",
         timezone="America/New_York"),
    Case(None, "ALTER TABLE entry ALTER COLUMN name TYPE VARCHAR(200)"),
    Case(None, "ALTER TABLE entry ALTER COLUMN name TYPE TEXT"),
    Case(None, "ALTER TABLE entry ALTER COLUMN name TYPE VARCHAR"),
    Case(None, "ALTER TABLE entry ALTER COLUMN price TYPE NUMERIC(12, 2)"),
    Case(None, "ALTER TABLE entry ALTER COLUMN ts TYPE TIMESTAMP WITH TIME ZONE"),
    Case("adding-not-nullable-field", "ALTER TABLE entry ALTER COLUMN name SET NOT NULL"),
    Case("adding-foreign-key-constraint",
         "ALTER TABLE entry ADD CONSTRAINT fk_entry_account_id_account FOREIGN KEY(account_id)"
         " REFERENCES account (id)"),
    Case(None, "ALTER TABLE entry ADD CONSTRAINT fk_entry_account_id_account"
               " FOREIGN KEY(account_id) REFERENCES account (id) NOT VALID"),
    Case("constraint-missing-not-valid",
         "ALTER TABLE entry ADD CONSTRAINT ck_entry_amount CHECK (amount < 100000)"),
    Case(None, "ALTER TABLE entry ADD CONSTRAINT ck_entry_amount CHECK (amount < 100000)"
               " NOT VALID"),
    Case("constraint-missing-not-valid", "ALTER TABLE entry VALIDATE CONSTRAINT ck_entry_amount",
         before=("ALTER TABLE entry ADD CONSTRAINT ck_entry_amount CHECK (amount < 100000)"
                 " NOT VALID",)),
    Case(None, "ALTER TABLE entry VALIDATE CONSTRAINT ck_entry_positive"),
    Case("disallowed-unique-constraint",
         "ALTER TABLE entry ADD CONSTRAINT uq_entry_account_id_id UNIQUE (account_id, id)"),
    Case("disallowed-unique-constraint",
         "ALTER TABLE event ADD CONSTRAINT pk_event PRIMARY KEY (id)", table="event"),
    Case(None, "ALTER TABLE entry ADD CONSTRAINT uq_entry_code UNIQUE USING INDEX ix_entry_code"),
    Case("ban-drop-column", "ALTER TABLE entry DROP COLUMN name",
         breaks="SELECT id, name FROM entry"),
    Case("ban-drop-table", "DROP TABLE event", table="event", breaks="SELECT id FROM event"),
    Case("renaming-column", "ALTER TABLE entry RENAME name TO title",
         breaks="SELECT id, name FROM entry"),
    Case("renaming-column", "ALTER TABLE entry RENAME COLUMN name TO title",
         breaks="SELECT id, name FROM entry"),
    Case("renaming-table", "ALTER TABLE entry RENAME TO entries",
         breaks="SELECT id FROM entry"),
]

MARIADB_SCHEMA = (
    "CREATE TABLE account (id INTEGER NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " name VARCHAR(40) NOT NULL) DEFAULT CHARSET=utf8mb4",
    "INSERT INTO account (name) SELECT CONCAT('account ', seq) FROM seq_1_to_100",
    "CREATE TABLE entry (id INTEGER NOT NULL PRIMARY KEY, account_id INTEGER NOT NULL,"
    " amount INTEGER NOT NULL, name VARCHAR(20), price NUMERIC(10, 2), ts DATETIME, body TEXT,"
    " code VARCHAR(40), label VARCHAR(100), KEY ix_entry_amount (amount))"
    " DEFAULT CHARSET=utf8mb4",
    "INSERT INTO entry SELECT seq, 1 + seq % 100, seq, CONCAT('name ', seq), seq / 100, NOW(),"
    " CONCAT('body ', seq), CONCAT('c', seq), CONCAT('l', seq) FROM seq_1_to_3000",
    "CREATE TABLE event (id INTEGER NOT NULL, kind VARCHAR(20)) DEFAULT CHARSET=utf8mb4",
    "INSERT INTO event SELECT seq, 'k' FROM seq_1_to_3000",
    "ANALYZE TABLE account, entry, event",
)

MARIADB_CASES = [
    Case(None, "CREATE INDEX ix_entry_account_id ON {table} (account_id)",
         accepts="ALGORITHM=NOCOPY, LOCK=NONE"),
    Case(None, "CREATE UNIQUE INDEX ix_entry_code ON {table} (code)",
         accepts="ALGORITHM=NOCOPY, LOCK=NONE"),
    Case("require-concurrent-index-creation",
         "CREATE FULLTEXT INDEX ix_entry_body ON {table} (body)"),
    Case(None, "ALTER TABLE {table} DROP INDEX ix_entry_amount",
         accepts="ALGORITHM=NOCOPY, LOCK=NONE"),
    Case("adding-field-with-default", "ALTER TABLE {table} ADD COLUMN token CHAR(36)"
                                      " DEFAULT (uuid())"),
    Case("adding-field-with-default", "ALTER TABLE {table} ADD COLUMN stamp DATETIME"
                                      " DEFAULT (sysdate())"),
    Case("adding-field-with-default", "ALTER TABLE {table} ADD COLUMN doubled INTEGER"
                                      " DEFAULT (amount * 2)"),
    Case("adding-field-with-default", "ALTER TABLE {table} ADD COLUMN doubled INTEGER"
                                      " AS (amount * 2) STORED"),
    Case("adding-field-with-default", "ALTER TABLE {table} ADD COLUMN number INTEGER"
                                      " NOT NULL AUTO_INCREMENT UNIQUE", table="event"),
    Case(None, "ALTER TABLE {table} ADD COLUMN status VARCHAR(20) NOT NULL DEFAULT 'new'",
         accepts="ALGORITHM=INSTANT"),
    Case(None, "ALTER TABLE {table} ADD COLUMN created DATETIME DEFAULT (now())",
         accepts="ALGORITHM=INSTANT"),
    Case(None, "ALTER TABLE {table} ADD COLUMN score DOUBLE DEFAULT (rand())",
         accepts="ALGORITHM=INSTANT"),
    Case(None, "ALTER TABLE {table} ADD COLUMN halved INTEGER AS (amount / 2) VIRTUAL",
         accepts="ALGORITHM=INSTANT"),
    Case("adding-required-field", "ALTER TABLE {table} ADD COLUMN status VARCHAR(20) NOT NULL",
         breaks="INSERT INTO {table} (id, account_id, amount) VALUES (100000, 1, 1)"),
    Case("changing-column-type", "ALTER TABLE {table} MODIFY amount BIGINT NOT NULL"),
    Case("changing-column-type", "ALTER TABLE {table} MODIFY name VARCHAR(10) NULL"),
    Case("changing-column-type", "ALTER TABLE {table} MODIFY name TEXT NULL"),
    Case("changing-column-type", "ALTER TABLE {table} MODIFY price NUMERIC(12, 2) NULL"),
    Case("changing-column-type", "ALTER TABLE {table} MODIFY code VARCHAR(64) NULL"),
    Case(None, "ALTER TABLE {table} MODIFY name VARCHAR(200) NULL", accepts="ALGORITHM=INSTANT"),
    Case(None, "ALTER TABLE {table} MODIFY label VARCHAR(300) NULL", accepts="ALGORITHM=INSTANT"),
    Case("adding-not-nullable-field", "ALTER TABLE {table} MODIFY name VARCHAR(20) NOT NULL"),
    Case("adding-foreign-key-constraint",
         "ALTER TABLE {table} ADD CONSTRAINT fk_entry_account_id_account"
         " FOREIGN KEY(account_id) REFERENCES account (id)"),
    Case("constraint-missing-not-valid",
         "ALTER TABLE {table} ADD CONSTRAINT ck_entry_amount CHECK (amount < 100000)"),
    Case("disallowed-unique-constraint", "ALTER TABLE {table} ADD CONSTRAINT pk_event"
                                         " PRIMARY KEY (id)", table="event"),
    Case(None, "ALTER TABLE {table} ADD CONSTRAINT uq_entry_code UNIQUE (code)",
         accepts="ALGORITHM=NOCOPY, LOCK=NONE"),
    Case("ban-drop-column", "ALTER TABLE {table} DROP COLUMN name",
         breaks="SELECT id, name FROM {table}"),
    Case("ban-drop-table", "DROP TABLE {table}", table="event",
         breaks="SELECT id FROM {table}"),
    Case("renaming-column", "ALTER TABLE {table} CHANGE name title VARCHAR(20) NULL",
         breaks="SELECT id, name FROM {table}"),
    Case("renaming-column", "ALTER TABLE {table} RENAME COLUMN name TO title",
         breaks="SELECT id, name FROM {table}"),
    Case("renaming-table", "ALTER TABLE {table} RENAME TO {table}_renamed",
         breaks="SELECT id FROM {table}"),
]

VERIFIED: list[tuple[str, str, str, str]] = []
"""(rule, server, claim, how it was verified): printed at the end of the module."""


@pytest.fixture(scope="module", autouse=True)
def print_verified_table() -> Iterator[None]:
    yield
    if VERIFIED:
        print("\n\n| rule | database | claim | verified by | cases |\n|---|---|---|---|---|")
        for row, count in sorted(collections.Counter(VERIFIED).items()):
            print("| " + " | ".join((*row, str(count))) + " |")


# PostgreSQL


@pytest.fixture(scope="module")
def postgresql_dsn() -> Iterator[str]:
    """A database with the populated tables, shared by the module: each case rolls back."""
    with server_database("postgresql") as url:
        dsn = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(
            hide_password=False)
        with psycopg.connect(dsn, autocommit=True) as connection:
            for statement in POSTGRESQL_SCHEMA:
                connection.execute(statement)
        yield dsn


@pytest.mark.postgresql
@pytest.mark.parametrize("case", POSTGRESQL_CASES, ids=lambda case: case.label)
def test_postgresql_claims(case: Case, postgresql_dsn: str) -> None:
    with psycopg.connect(postgresql_dsn, autocommit=True) as connection:
        connection.execute(f"SET TimeZone = '{case.timezone}'")
        report = _lint(case, "postgresql", read_facts(
            connection.cursor(), "postgresql", [(None, case.table), (None, "account")]))
        finding = _finding(report, case)
        observed = _run_postgresql(connection, case)
    server = f"PostgreSQL {report.database.server_version}"
    if case.refused:
        assert observed.error is not None and case.refused in observed.error, observed
        VERIFIED.append((_rule(case), server, "the server refuses it",
                         f"the statement fails in a transaction: {case.refused}"))
        return
    assert observed.error is None, observed.error
    if finding is None:
        assert observed.rewrite is False, f"no finding, but the server rewrote {case.table}"
        VERIFIED.append((_rule(case), server, "no finding (no rewrite)",
                         f"relfilenode unchanged; lock {observed.lock}" if case.transactional
                         else "the server runs it outside a transaction"))
        return
    assert (finding.lock, finding.rewrite) == (observed.lock, observed.rewrite), (
        f"claimed {finding.lock}/{finding.rewrite}, the server did {observed.lock}/"
        f"{observed.rewrite}")
    if case.breaks:
        assert observed.breaks_error is not None, f"{case.breaks!r} still works after it"
    VERIFIED.append((_rule(case), server,
                     f"lock={finding.lock}, rewrite={_json(finding.rewrite)}",
                     "pg_locks and relfilenode in a rolled-back transaction"
                     + ("; the old release's query fails after it" if case.breaks else "")))


@dataclass(frozen=True)
class Observed:
    lock: str | None = None
    rewrite: bool | None = None
    error: str | None = None
    breaks_error: str | None = None


def _run_postgresql(connection: Any, case: Case) -> Observed:
    """Run the case's statements on the server; what it locked and rewrote; rolled back."""
    cursor = connection.cursor()
    oid, relfilenode = cursor.execute(
        "SELECT oid, relfilenode FROM pg_class WHERE oid = %s::regclass", (case.table,)
    ).fetchone()
    statements = [*case.before, case.statement.format(table=case.table)]
    if not case.transactional:
        try:
            for statement in statements:
                cursor.execute(statement)
        except psycopg.Error as exc:
            return Observed(error=str(exc))
        finally:
            _undo_outside_transaction(cursor, case)
        return Observed(rewrite=False)
    if case.breaks:
        cursor.execute("BEGIN")
        cursor.execute(case.breaks)
        cursor.execute("ROLLBACK")
    cursor.execute("BEGIN")
    try:
        for statement in statements:
            cursor.execute(statement)
    except psycopg.Error as exc:
        cursor.execute("ROLLBACK")
        return Observed(error=str(exc))
    modes = [row[0] for row in cursor.execute(
        "SELECT mode FROM pg_locks WHERE pid = pg_backend_pid() AND relation = %s AND granted",
        (oid,)).fetchall()]
    after = cursor.execute("SELECT relfilenode FROM pg_class WHERE oid = %s", (oid,)).fetchone()
    breaks_error = None
    if case.breaks:
        cursor.execute("SAVEPOINT old_release")
        try:
            cursor.execute(case.breaks)
        except psycopg.Error as exc:
            breaks_error = str(exc)
        cursor.execute("ROLLBACK TO SAVEPOINT old_release")
    cursor.execute("ROLLBACK")
    rewrite = None if after is None else after[0] != relfilenode
    return Observed(lock=_strongest(modes), rewrite=rewrite, breaks_error=breaks_error)


def _undo_outside_transaction(cursor: Any, case: Case) -> None:
    """Put back what a CONCURRENTLY statement did outside a transaction."""
    if case.statement.startswith("CREATE INDEX CONCURRENTLY"):
        cursor.execute("DROP INDEX IF EXISTS ix_entry_account_id")
    if case.statement.startswith("DROP INDEX CONCURRENTLY"):
        cursor.execute("CREATE INDEX IF NOT EXISTS ix_entry_amount ON entry (amount)")


PG_MODES = {
    "AccessShareLock": "ACCESS SHARE", "RowShareLock": "ROW SHARE",
    "RowExclusiveLock": "ROW EXCLUSIVE", "ShareUpdateExclusiveLock": "SHARE UPDATE EXCLUSIVE",
    "ShareLock": "SHARE", "ShareRowExclusiveLock": "SHARE ROW EXCLUSIVE",
    "ExclusiveLock": "EXCLUSIVE", "AccessExclusiveLock": "ACCESS EXCLUSIVE",
}


def _strongest(modes: list[str]) -> str | None:
    names = list(PG_MODES)
    return PG_MODES[max(modes, key=names.index)] if modes else None


# MariaDB


@pytest.fixture(scope="module")
def mariadb_params() -> Iterator[dict[str, Any]]:
    """Connection parameters of a database with the populated tables (each case works on
    scratch copies)."""
    with server_database("mysql") as url:
        parsed = sa.engine.make_url(url)
        params = {"host": parsed.host, "port": parsed.port or 3306, "user": parsed.username,
                  "password": parsed.password or "", "database": parsed.database,
                  "autocommit": True}
        with contextlib.closing(pymysql.connect(**params)) as connection:
            cursor = connection.cursor()
            for statement in MARIADB_SCHEMA:
                cursor.execute(statement)
                cursor.fetchall()
        yield params


@pytest.mark.mysql
@pytest.mark.parametrize("case", MARIADB_CASES, ids=lambda case: case.label)
def test_mariadb_claims(case: Case, mariadb_params: dict[str, Any]) -> None:
    with contextlib.closing(pymysql.connect(**mariadb_params)) as connection:
        cursor = connection.cursor()
        report = _lint(case, "mysql", read_facts(cursor, "mysql",
                                                 [(None, case.table), (None, "account")]))
        finding = _finding(report, case)
        server = f"{report.database.backend} {report.database.server_version}"
        if case.breaks:
            assert _mariadb_attempt(cursor, case, None, case.breaks) is None
        if finding is None:
            assert case.accepts is not None
            refused = _mariadb_attempt(cursor, case, case.accepts)
            assert refused is None, f"no finding, but the server refuses {case.accepts}: {refused}"
            VERIFIED.append((_rule(case), server, f"no finding ({case.accepts})",
                             f"the server accepts {case.accepts} on a copy"))
            return
        how = []
        if finding.algorithm is not None:
            claim = finding.algorithm
            refused = _mariadb_attempt(cursor, case, f"ALGORITHM={claim}")
            assert refused is None, f"claimed {claim}, the server refuses it: {refused}"
            how.append(f"ALGORITHM={claim} accepted")
            if claim != "INSTANT":
                cheaper = ALGORITHMS[ALGORITHMS.index(claim) - 1]
                refused = _mariadb_attempt(cursor, case, f"ALGORITHM={cheaper}")
                assert refused is not None, f"claimed {claim}, the server accepts {cheaper}"
                how.append(f"{cheaper} refused")
            if claim == "INPLACE":
                rebuilds = "rebuilds all of" in finding.message
                refused = _mariadb_attempt(cursor, case, "ALGORITHM=NOCOPY")
                assert (refused is not None) == rebuilds, (finding.message, refused)
                how.append("NOCOPY refused (a rebuild)" if rebuilds else "NOCOPY accepted")
            if case.rule in LOCKING:
                # The message says whether writes wait: LOCK=NONE must agree.
                blocks = "LOCK=SHARED" in finding.message or "ALGORITHM=COPY" in finding.message
                refused = _mariadb_attempt(cursor, case, f"ALGORITHM={claim}, LOCK=NONE")
                assert (refused is not None) == blocks, (finding.message, refused)
                how.append("LOCK=NONE refused" if blocks else "LOCK=NONE accepted")
        if case.breaks:
            broken = _mariadb_attempt(cursor, case, "", case.breaks)
            assert broken is not None, f"{case.breaks!r} still works after it"
            how.append("the old release's query fails after it")
        VERIFIED.append((_rule(case), server, f"algorithm={finding.algorithm or 'null'}",
                         ", ".join(how) + " (on a copy)"))


def _mariadb_attempt(cursor: Any, case: Case, clause: str | None,
                     then: str | None = None) -> str | None:
    """On a fresh copy of the case's table: the statement with `clause` appended ("": as it
    is; None: not run), then the query `then`; the error, None when all succeeded."""
    copy = f"{case.table}_copy"
    cursor.execute(f"DROP TABLE IF EXISTS {copy}, {copy}_renamed")
    cursor.execute(f"CREATE TABLE {copy} LIKE {case.table}")
    cursor.execute(f"INSERT INTO {copy} SELECT * FROM {case.table}")
    statement = case.statement.format(table=copy)
    if clause:
        # CREATE INDEX takes the options without commas; ALTER TABLE as a list.
        statement += (" " + clause.replace(",", "") if statement.upper().startswith("CREATE")
                      else ", " + clause)
    try:
        if clause is not None:
            cursor.execute(statement)
        if then is not None:
            cursor.execute(then.format(table=copy))
            cursor.fetchall()
    except pymysql.MySQLError as exc:
        return str(exc)
    finally:
        cursor.execute(f"DROP TABLE IF EXISTS {copy}, {copy}_renamed")
    return None


# Both


def _lint(case: Case, dialect: str, facts: DatabaseFacts) -> LintReport:
    """Judge the case's statements as one revision, as Alembic would emit them."""
    statements = [*case.before, case.statement.format(table=case.table)]
    hint = OperationHint(table=TableName(None, case.table)) if case.index_table else None
    captured = CapturedRevision(revision="claims", path="claims.py", statements=tuple(
        CapturedStatement(sql=sql, line=number,
                          transaction=1 if case.transactional and dialect == "postgresql"
                          else None, hint=hint)
        for number, sql in enumerate(statements, start=1)))
    return judge(assemble([captured], dialect), facts, SETTINGS)


def _finding(report: LintReport, case: Case) -> Finding | None:
    """The finding the case is about (on its last statement); for a twin, asserts none."""
    last = len(case.before) + 1
    relevant = [f for f in report.findings if f.line == last
                and f.rule in LOCKING | BREAKING | {"ban-concurrent-index-creation-in-transaction"}]
    if case.rule is None:
        assert relevant == [], [f.message for f in relevant]
        return None
    matching = [f for f in relevant if f.rule == case.rule]
    assert len(matching) == 1, [(f.rule, f.message) for f in report.findings]
    assert matching[0].severity == "error"
    return matching[0]


def _rule(case: Case) -> str:
    return case.rule or f"(safe twin) {case.statement.format(table=case.table)}"


def _json(value: bool | None) -> str:
    return "null" if value is None else str(value).lower()

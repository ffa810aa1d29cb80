"""What the live database says about the tables a range touches: server version, row
estimates, sizes, column definitions.

Read through a plain DB-API cursor (psycopg 3 or PyMySQL, `%s` placeholders). Only catalog
reads and, for a table whose estimate is missing or zero and that is small, a `count(*)`.

Locks: on PostgreSQL, `pg_total_relation_size` and the count take ACCESS SHARE on the table,
held to the end of the transaction (or of the savepoint the caller rolls back to: rolling back
to a savepoint releases the locks taken after it). On MySQL/MariaDB the count takes a shared
metadata lock held to the end of the transaction when the cursor's connection is not in
autocommit. Neither conflicts with the caller's own DDL on the same connection.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from runner.lint.changes import TableName

CHEAP_COUNT_BYTES = 8 * 1024 * 1024
"""A table whose data is at most this big is counted when its estimate is missing or zero:
an estimate of 0 is also what a table filled since it was last analyzed shows."""

UTC_NAMES = frozenset({"utc", "etc/utc", "etc/uct", "uct", "gmt", "etc/gmt", "zulu",
                       "etc/zulu", "universal", "etc/universal", "gmt0", "etc/gmt0"})


@dataclass(frozen=True)
class ColumnFacts:
    """A live column: its type as the server spells it, nullability, MySQL character set."""

    name: str
    type: str
    nullable: bool
    charset: str | None = None
    charset_bytes: int | None = None
    """MySQL/MariaDB: the character set's bytes per character (MAXLEN)."""


@dataclass(frozen=True)
class TableFacts:
    """A live table's size and columns. `rows` None: unknown (counts as large)."""

    rows: int | None
    bytes: int | None
    counted: bool = False
    """Whether `rows` was counted rather than estimated."""
    columns: Mapping[str, ColumnFacts] = field(default_factory=dict)
    row_format: str | None = None
    """MySQL/MariaDB: DYNAMIC, COMPACT, REDUNDANT, COMPRESSED."""
    charset: str | None = None
    """MySQL/MariaDB: the table's default character set."""
    charset_bytes: int | None = None


@dataclass(frozen=True)
class DatabaseFacts:
    """The server and the tables, as read before the range is judged."""

    backend: str
    """postgresql, mysql or mariadb (told apart by VERSION())."""
    version: tuple[int, ...]
    version_text: str
    tables: Mapping[TableName, TableFacts] = field(default_factory=dict)
    timezone: str | None = None
    """PostgreSQL: the session's TimeZone (a timestamp to timestamptz change rewrites unless
    it is UTC)."""

    def table(self, name: TableName) -> TableFacts | None:
        """The facts of a table, None when it does not exist (yet)."""
        return self.tables.get(name)


def read_facts(
    cursor: Any, backend: str, tables: Iterable[TableName | tuple[str | None, str]] = (),
) -> DatabaseFacts:
    """Read the server version and each table's facts; a table that does not exist has none.

    `backend` is the URL's: postgresql, or mysql/mariadb (the server's VERSION() decides which
    of the two it is).
    """
    names = [name if isinstance(name, TableName) else TableName(*name) for name in tables]
    if backend == "postgresql":
        return _read_postgresql(cursor, names)
    if backend in ("mysql", "mariadb"):
        return _read_mysql(cursor, names)
    raise ValueError(f"no facts for backend {backend!r}: postgresql, mysql or mariadb")


def version_tuple(text: str) -> tuple[int, ...]:
    """'10.11.6-MariaDB-0+deb12u1' -> (10, 11, 6); '15.4 (Debian ...)' -> (15, 4)."""
    found = re.match(r"\s*(\d+(?:\.\d+)*)", text)
    return tuple(int(part) for part in found.group(1).split(".")) if found else ()


def is_utc(timezone: str | None) -> bool:
    return timezone is not None and timezone.strip().lower() in UTC_NAMES


# PostgreSQL


def _read_postgresql(cursor: Any, names: list[TableName]) -> DatabaseFacts:
    cursor.execute("SELECT current_setting('server_version_num'),"
                   " current_setting('server_version'), current_setting('TimeZone')")
    number, text, timezone = cursor.fetchone()
    numeric = int(number)
    # server_version_num: 150004 is 15.4 (10 and later); 90624 is 9.6.24.
    version = (numeric // 10000, numeric % 10000) if numeric >= 100000 else (
        numeric // 10000, numeric // 100 % 100, numeric % 100)
    tables: dict[TableName, TableFacts] = {}
    for name in names:
        facts = _postgresql_table(cursor, name)
        if facts is not None:
            tables[name] = facts
    return DatabaseFacts(backend="postgresql", version=version, version_text=str(text),
                         tables=tables, timezone=str(timezone))


def _postgresql_table(cursor: Any, name: TableName) -> TableFacts | None:
    qualified = _pg_quote(name)
    cursor.execute("SELECT to_regclass(%s::text)::oid", (qualified,))
    row = cursor.fetchone()
    if row is None or row[0] is None:
        return None
    oid = int(row[0])
    cursor.execute(
        "SELECT c.reltuples, pg_total_relation_size(c.oid), pg_relation_size(c.oid)"
        " FROM pg_class c WHERE c.oid = %s", (oid,))
    reltuples, total, main = cursor.fetchone()
    # reltuples is -1 on a table never vacuumed or analyzed (PostgreSQL 14+), and 0 on one
    # analyzed while empty: either way, count it when that is cheap.
    estimate = round(float(reltuples)) if float(reltuples) > 0 else None
    counted = False
    if estimate is None and int(main) <= CHEAP_COUNT_BYTES:
        cursor.execute(f"SELECT count(*) FROM {qualified}")
        estimate, counted = int(cursor.fetchone()[0]), True
    cursor.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull"
        " FROM pg_attribute a WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped",
        (oid,))
    columns = {str(column): ColumnFacts(name=str(column), type=str(type_), nullable=bool(nullable))
               for column, type_, nullable in cursor.fetchall()}
    return TableFacts(rows=estimate, bytes=int(total), counted=counted, columns=columns)


def _pg_quote(name: TableName) -> str:
    def quote(part: str) -> str:
        return '"' + part.replace('"', '""') + '"'

    return f"{quote(name.schema)}.{quote(name.name)}" if name.schema else quote(name.name)


# MySQL and MariaDB


def _read_mysql(cursor: Any, names: list[TableName]) -> DatabaseFacts:
    cursor.execute("SELECT VERSION()")
    text = str(cursor.fetchone()[0])
    backend = "mariadb" if "mariadb" in text.lower() else "mysql"
    tables: dict[TableName, TableFacts] = {}
    for name in names:
        facts = _mysql_table(cursor, name)
        if facts is not None:
            tables[name] = facts
    return DatabaseFacts(backend=backend, version=version_tuple(text), version_text=text,
                         tables=tables)


def _mysql_table(cursor: Any, name: TableName) -> TableFacts | None:
    cursor.execute(
        "SELECT t.TABLE_ROWS, t.DATA_LENGTH, t.INDEX_LENGTH, t.ROW_FORMAT,"
        " cs.CHARACTER_SET_NAME, cs.MAXLEN"
        " FROM information_schema.TABLES t"
        " LEFT JOIN information_schema.CHARACTER_SETS cs"
        "  ON cs.CHARACTER_SET_NAME = SUBSTRING_INDEX(t.TABLE_COLLATION, '_', 1)"
        " WHERE t.TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND t.TABLE_NAME = %s",
        (name.schema, name.name))
    row = cursor.fetchone()
    if row is None:
        return None
    table_rows, data_length, index_length, row_format, charset, maxlen = row
    estimate = int(table_rows) if table_rows else None
    counted = False
    # MySQL 8 caches TABLE_ROWS (information_schema_stats_expiry): 0 may be stale.
    if estimate is None and int(data_length or 0) <= CHEAP_COUNT_BYTES:
        cursor.execute(f"SELECT COUNT(*) FROM {_mysql_quote(name)}")
        estimate, counted = int(cursor.fetchone()[0]), True
    cursor.execute(
        "SELECT c.COLUMN_NAME, c.COLUMN_TYPE, c.IS_NULLABLE, c.CHARACTER_SET_NAME, cs.MAXLEN"
        " FROM information_schema.COLUMNS c"
        " LEFT JOIN information_schema.CHARACTER_SETS cs"
        "  ON cs.CHARACTER_SET_NAME = c.CHARACTER_SET_NAME"
        " WHERE c.TABLE_SCHEMA = COALESCE(%s, DATABASE()) AND c.TABLE_NAME = %s",
        (name.schema, name.name))
    columns = {
        str(column): ColumnFacts(
            name=str(column), type=_text(type_), nullable=str(nullable).upper() == "YES",
            charset=str(column_charset) if column_charset else None,
            charset_bytes=int(column_maxlen) if column_maxlen else None)
        for column, type_, nullable, column_charset, column_maxlen in cursor.fetchall()
    }
    total = int(data_length or 0) + int(index_length or 0)
    return TableFacts(rows=estimate, bytes=total, counted=counted, columns=columns,
                      row_format=str(row_format).upper() if row_format else None,
                      charset=str(charset) if charset else None,
                      charset_bytes=int(maxlen) if maxlen else None)


def _mysql_quote(name: TableName) -> str:
    def quote(part: str) -> str:
        return "`" + part.replace("`", "``") + "`"

    return f"{quote(name.schema)}.{quote(name.name)}" if name.schema else quote(name.name)


def _text(value: Any) -> str:
    """information_schema's longtext columns come back as bytes from some drivers."""
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)

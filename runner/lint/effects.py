"""What the server does for each change: the claims a finding makes.

PostgreSQL: the strongest lock mode the statement takes on the table (PostgreSQL's names) and
whether it rewrites the table (a new relfilenode), plus whether it reads every row while it
holds the lock (a validation scan or an index build). MySQL/MariaDB: the cheapest ALGORITHM
the server accepts (INSTANT, INPLACE, COPY) for that server's version, whether an INPLACE
change rebuilds the table, and whether writes must wait (LOCK=SHARED at best).

Every claim is checked against the real servers by tests/integration/test_lint_claims.py;
where the parser and the server disagreed, the server won and the table here changed. What
could not be checked here (PostgreSQL before 15, MySQL, MariaDB before 10.11) follows the
servers' manuals.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    RedefineColumn,
    RenameColumn,
    RenameTable,
    SetNotNull,
    TableName,
    ValidateConstraint,
)
from runner.lint.facts import is_utc

LOCK_MODES = (
    "ACCESS SHARE", "ROW SHARE", "ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "SHARE",
    "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE",
)
"""PostgreSQL's table lock modes, weakest first."""

ALGORITHMS = ("INSTANT", "INPLACE", "COPY")
"""MySQL/MariaDB's ALTER TABLE algorithms, cheapest first (MariaDB's NOCOPY is an INPLACE
that does not rebuild: reported as INPLACE)."""

PG_NON_VOLATILE = frozenset({
    "current_timestamp", "now", "current_date", "current_time", "localtime",
    "localtimestamp", "transaction_timestamp", "statement_timestamp", "current_user",
    "session_user", "user", "current_role", "current_schema", "lower", "upper", "coalesce",
    "concat", "array", "to_jsonb", "to_json", "jsonb_build_object", "json_build_object",
    "jsonb_build_array", "json_build_array", "make_interval", "interval",
})
"""Functions whose value PostgreSQL 11+ computes once for ADD COLUMN ... DEFAULT (stable or
immutable): no rewrite. Any other function is taken as volatile: a rewrite."""

MYSQL_COPY_DEFAULT_FUNCTIONS = frozenset({"uuid", "uuid_short", "sys_guid", "sysdate"})
"""Default expressions MariaDB 10.11 cannot add instantly (verified: each is ALGORITHM=COPY);
now(), curdate(), rand() and constant expressions are INSTANT."""

CHARSET_BYTES = {
    "latin1": 1, "ascii": 1, "binary": 1, "cp1250": 1, "cp1251": 1, "cp1252": 1, "latin2": 1,
    "utf8": 3, "utf8mb3": 3, "utf8mb4": 4, "ucs2": 2, "utf16": 4, "utf16le": 4, "utf32": 4,
    "big5": 2, "gbk": 2, "gb2312": 2, "sjis": 2, "euckr": 2, "ujis": 3,
}
"""MySQL/MariaDB character sets' bytes per character, for a CHARACTER SET a statement names
(the live tables' come from information_schema.CHARACTER_SETS)."""

OFFLINE_VERSIONS = {"postgresql": (13,), "mysql": (8, 0, 29), "mariadb": (10, 11)}
"""The server version assumed without a connection: the oldest still supported upstream."""


@dataclass(frozen=True)
class Server:
    """The server the range will run on, as far as it is known."""

    backend: str
    """postgresql, mysql, mariadb or sqlite."""
    version: tuple[int, ...]
    assumed: bool = False
    """Whether the version is assumed (offline) rather than read."""
    timezone: str | None = None

    @property
    def is_mysql(self) -> bool:
        return self.backend in ("mysql", "mariadb")

    def at_least(self, *version: int) -> bool:
        return self.version >= version


@dataclass(frozen=True)
class OldColumn:
    """A column before the change: from the operation's `existing_*` arguments or the live
    table; None fields are unknown."""

    type: ColumnType | None = None
    nullable: bool | None = None
    charset: str | None = None
    charset_bytes: int | None = None


@dataclass(frozen=True)
class Surroundings:
    """What besides the statement decides its effect."""

    old: OldColumn | None = None
    """The column before a type change or a redefinition."""
    redefinition: Redefinition | None = None
    """What a MySQL MODIFY/CHANGE changes (judge.py works it out)."""
    in_transaction: bool = False
    row_format: str | None = None
    """MySQL/MariaDB: the table's ROW_FORMAT."""
    new_charset: str | None = None
    """MySQL/MariaDB: the character set a redefined column gets (its own CHARACTER SET, else
    the table's default)."""
    new_charset_bytes: int | None = None
    """Its bytes per character."""


@dataclass(frozen=True)
class Effect:
    """What the server does for one change; None claims do not apply."""

    lock: str | None = None
    rewrite: bool | None = None
    scans: bool = False
    """PostgreSQL: reads every row (validation, index build) while it holds the lock."""
    algorithm: str | None = None
    rebuild: bool = False
    """MySQL/MariaDB: an INPLACE change that rebuilds the table."""
    blocks_writes: bool = False
    """MySQL/MariaDB: concurrent writes wait (COPY, or LOCK=SHARED at best)."""
    fails: str | None = None
    """Why the server refuses it where it runs (CONCURRENTLY inside a transaction)."""
    also_locks: tuple[tuple[TableName, str], ...] = ()
    """Other tables it locks, with the mode (the table a foreign key references)."""


@dataclass(frozen=True)
class Redefinition:
    """What a MySQL MODIFY/CHANGE changes, against the old column."""

    type_changes: bool
    sets_not_null: bool
    drops_not_null: bool
    renames: bool


def effect(change: Change, server: Server, around: Surroundings | None = None) -> Effect:
    """What `server` does for `change`."""
    around = around or Surroundings()
    if server.backend == "postgresql":
        return _postgresql(change, server, around)
    if server.is_mysql:
        return _mysql(change, server, around)
    return Effect()


def strongest_lock(modes: list[str | None]) -> str | None:
    known = [mode for mode in modes if mode in LOCK_MODES]
    return max(known, key=LOCK_MODES.index) if known else None


def costliest_algorithm(algorithms: list[str | None]) -> str | None:
    known = [algorithm for algorithm in algorithms if algorithm in ALGORITHMS]
    return max(known, key=ALGORITHMS.index) if known else None


def redefinition(change: RedefineColumn, old: OldColumn | None, type_given: bool | None,
                 nullable_given: bool | None) -> Redefinition:
    """What a MODIFY/CHANGE changes. `type_given`/`nullable_given`: what the Alembic
    operation asked for (None for a raw statement): an unknown old type counts as changed."""
    old = old or OldColumn()
    if type_given is False:
        type_changes = False
    elif old.type is None or change.type is None:
        type_changes = True
    else:
        type_changes = not same_type(old.type, change.type)
    if nullable_given is not None:
        sets_not_null = nullable_given is False and old.nullable is not False
        drops_not_null = nullable_given is True and old.nullable is False
    else:
        sets_not_null = change.not_null and old.nullable is True
        drops_not_null = not change.not_null and old.nullable is False
    return Redefinition(type_changes=type_changes, sets_not_null=sets_not_null,
                        drops_not_null=drops_not_null, renames=change.new_name is not None)


def same_type(old: ColumnType, new: ColumnType) -> bool:
    """Whether two types are the same, a MySQL integer's display width aside."""
    if old.name != new.name:
        return False
    if old.name in INTEGER_TYPES:
        return True
    return old.params == new.params and (new.charset is None or old.charset in (None,
                                                                               new.charset))


INTEGER_TYPES = frozenset({"TINYINT", "SMALLINT", "MEDIUMINT", "INT", "BIGINT", "UTINYINT",
                           "USMALLINT", "UMEDIUMINT", "UINT", "UBIGINT"})
VARCHAR_TYPES = frozenset({"VARCHAR", "NVARCHAR"})
TEXT_TYPES = frozenset({"TEXT"})


# PostgreSQL


def _postgresql(change: Change, server: Server, around: Surroundings) -> Effect:
    in_transaction = around.in_transaction
    if isinstance(change, CreateIndex):
        if change.concurrently:
            return Effect(lock="SHARE UPDATE EXCLUSIVE", rewrite=False, fails=(
                "CREATE INDEX CONCURRENTLY cannot run inside a transaction block"
                if in_transaction else None))
        return Effect(lock="SHARE", rewrite=False, scans=True)
    if isinstance(change, DropIndex):
        if change.concurrently:
            return Effect(lock="SHARE UPDATE EXCLUSIVE", rewrite=False, fails=(
                "DROP INDEX CONCURRENTLY cannot run inside a transaction block"
                if in_transaction else None))
        return Effect(lock="ACCESS EXCLUSIVE", rewrite=False)
    if isinstance(change, AddColumn):
        rewrite = _pg_default_rewrites(change.default, server)
        return Effect(lock="ACCESS EXCLUSIVE", rewrite=rewrite, scans=rewrite)
    if isinstance(change, AlterColumnType):
        rewrite = change.using or _pg_type_rewrites(
            around.old.type if around.old else None, change.type, server)
        return Effect(lock="ACCESS EXCLUSIVE", rewrite=rewrite, scans=rewrite)
    if isinstance(change, SetNotNull):
        return Effect(lock="ACCESS EXCLUSIVE", rewrite=False, scans=True)
    if isinstance(change, AddForeignKey):
        also = ((change.referenced, "SHARE ROW EXCLUSIVE"),) if change.referenced else ()
        return Effect(lock="SHARE ROW EXCLUSIVE", rewrite=False, scans=not change.not_valid,
                      also_locks=also)
    if isinstance(change, AddCheck):
        return Effect(lock="ACCESS EXCLUSIVE", rewrite=False, scans=not change.not_valid)
    if isinstance(change, AddUnique):
        return Effect(lock="ACCESS EXCLUSIVE", rewrite=False,
                      scans=change.using_index is None)
    if isinstance(change, ValidateConstraint):
        return Effect(lock="SHARE UPDATE EXCLUSIVE", rewrite=False, scans=True)
    if isinstance(change, (DropColumn, RenameColumn, RenameTable)):
        return Effect(lock="ACCESS EXCLUSIVE", rewrite=False)
    if isinstance(change, DropTable):
        return Effect(lock="ACCESS EXCLUSIVE")
    if isinstance(change, CreateTable):
        return Effect(also_locks=tuple((table, "SHARE ROW EXCLUSIVE")
                                       for table in change.references))
    return Effect()


def _pg_default_rewrites(default: DefaultValue | None, server: Server) -> bool:
    """Whether ADD COLUMN with this default rewrites the table."""
    if default is None:
        return False
    if default.generated is not None:
        # Identity and serial columns draw a value per row; generated columns are stored.
        return True
    if not server.at_least(11):
        return True
    return default.reads_columns or not default.functions <= PG_NON_VOLATILE


def _pg_type_rewrites(old: ColumnType | None, new: ColumnType | None, server: Server) -> bool:
    """Whether ALTER COLUMN TYPE from `old` to `new` rewrites the table (unknown: it does)."""
    if old is None or new is None:
        return True
    if old.name == new.name and old.params == new.params:
        return False
    if old.name in VARCHAR_TYPES | TEXT_TYPES and new.name in VARCHAR_TYPES | TEXT_TYPES:
        if new.name in TEXT_TYPES or not new.params:
            return False  # to text or an unbounded varchar: binary coercible
        return old.name in TEXT_TYPES or not old.params or new.params[0] < old.params[0]
    if old.name == new.name == "DECIMAL":
        if not new.params:
            return False
        if not old.params or len(new.params) != len(old.params):
            return True
        old_scale = old.params[1] if len(old.params) > 1 else 0
        new_scale = new.params[1] if len(new.params) > 1 else 0
        return new_scale != old_scale or new.params[0] < old.params[0]
    if {old.name, new.name} == {"TIMESTAMP", "TIMESTAMPTZ"}:
        # 12+: no rewrite when the session time zone is UTC.
        return not (server.at_least(12) and is_utc(server.timezone))
    return True


# MySQL and MariaDB


def _mysql(change: Change, server: Server, around: Surroundings) -> Effect:
    mariadb = server.backend == "mariadb"
    if isinstance(change, CreateIndex):
        if change.special:
            # FULLTEXT/SPATIAL: in place, but with LOCK=SHARED at best.
            return Effect(algorithm="INPLACE", rebuild=True, blocks_writes=True)
        return Effect(algorithm="INPLACE")
    if isinstance(change, DropIndex):
        return Effect(algorithm="INPLACE")
    if isinstance(change, AddColumn):
        return _mysql_add_column(change.default, server)
    if isinstance(change, RedefineColumn):
        return _mysql_redefine(change, server, around)
    if isinstance(change, AddForeignKey):
        # INPLACE only with foreign_key_checks=0 (then existing rows are not checked).
        return Effect(algorithm="COPY", blocks_writes=True)
    if isinstance(change, AddCheck):
        return Effect(algorithm="COPY", blocks_writes=True)
    if isinstance(change, AddUnique):
        if change.primary_key:
            return Effect(algorithm="INPLACE", rebuild=True)
        return Effect(algorithm="INPLACE")
    if isinstance(change, DropColumn):
        instant = server.at_least(10, 4) if mariadb else server.at_least(8, 0, 29)
        return Effect(algorithm="INSTANT") if instant else Effect(algorithm="INPLACE",
                                                                  rebuild=True)
    if isinstance(change, RenameColumn):
        return Effect(algorithm=_mysql_rename_algorithm(server))
    if isinstance(change, RenameTable):
        return Effect(algorithm="INSTANT")
    return Effect()


def _mysql_add_column(default: DefaultValue | None, server: Server) -> Effect:
    if default is not None and default.generated == "stored":
        return Effect(algorithm="COPY", blocks_writes=True)
    if default is not None and default.generated == "auto_increment":
        # Verified: INPLACE, but "adding an auto-increment column requires a lock" (SHARED).
        return Effect(algorithm="INPLACE", rebuild=True, blocks_writes=True)
    if default is not None and default.generated != "virtual" and (default.reads_columns
                                or default.functions & MYSQL_COPY_DEFAULT_FUNCTIONS):
        return Effect(algorithm="COPY", blocks_writes=True)
    mariadb = server.backend == "mariadb"
    # Alembic appends the column last: instant from MariaDB 10.3.2 and MySQL 8.0.12.
    instant = server.at_least(10, 3, 2) if mariadb else server.at_least(8, 0, 12)
    return Effect(algorithm="INSTANT") if instant else Effect(algorithm="INPLACE", rebuild=True)


def _mysql_redefine(change: RedefineColumn, server: Server, around: Surroundings) -> Effect:
    """The algorithm of a MODIFY/CHANGE: the costliest of what it changes."""
    mariadb = server.backend == "mariadb"
    what = around.redefinition or redefinition(change, around.old, None, None)
    parts: list[Effect] = [Effect(algorithm="INSTANT")]
    if what.type_changes:
        parts.append(mysql_type_change(around.old, change.type, server, around))
    if what.sets_not_null:
        parts.append(Effect(algorithm="INPLACE", rebuild=True))
    if what.drops_not_null and not mariadb:
        parts.append(Effect(algorithm="INPLACE", rebuild=True))
    if what.renames:
        parts.append(Effect(algorithm=_mysql_rename_algorithm(server)))
    algorithm = costliest_algorithm([part.algorithm for part in parts])
    return Effect(algorithm=algorithm,
                  rebuild=any(part.rebuild for part in parts if part.algorithm == algorithm),
                  blocks_writes=any(part.blocks_writes for part in parts))


def _mysql_rename_algorithm(server: Server) -> str:
    if server.backend == "mariadb":
        return "INSTANT" if server.at_least(10, 3) else "INPLACE"
    return "INSTANT" if server.at_least(8, 0, 28) else "INPLACE"


def mysql_type_change(old: OldColumn | None, new: ColumnType | None, server: Server,
                      around: Surroundings) -> Effect:
    """What a MODIFY's type change costs on its own: only a VARCHAR widening in the same
    character set escapes a table copy."""
    copy = Effect(algorithm="COPY", blocks_writes=True)
    old_type = old.type if old else None
    if old_type is None or new is None:
        return copy
    old_charset = old.charset if old else None
    if old_charset and around.new_charset and old_charset != around.new_charset:
        return copy  # another character set: every value is converted
    if same_type(old_type, new):
        return Effect(algorithm="INSTANT")
    if not (old_type.name in VARCHAR_TYPES and new.name in VARCHAR_TYPES
            and old_type.params and new.params and new.params[0] >= old_type.params[0]):
        return copy
    # Bytes per character: utf8mb4's 4 when unknown (the common default).
    per_char = (old.charset_bytes if old else None) or around.new_charset_bytes or 4
    old_bytes, new_bytes = old_type.params[0] * per_char, new.params[0] * per_char
    if server.backend == "mariadb" and server.at_least(10, 4, 3):
        # Verified on 10.11 (DYNAMIC): instant unless the length needs a second byte that it
        # did not (a maximum of 128 to 255 bytes growing past 255).
        if (around.row_format or "").upper() == "REDUNDANT" or old_bytes < 128 \
                or new_bytes <= 255 or old_bytes > 255:
            return Effect(algorithm="INSTANT")
        return copy
    # MySQL, older MariaDB: in place while the length keeps its number of bytes.
    if (old_bytes <= 255) == (new_bytes <= 255):
        return Effect(algorithm="INPLACE")
    return copy

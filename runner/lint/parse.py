"""Rendered SQL to changes (changes.py), with sqlglot's PostgreSQL and MySQL dialects.

Each statement is parsed once. sqlglot falls back to a bare `Command` for syntax it does not
model (VALIDATE CONSTRAINT, USING INDEX, RENAME TABLE, CREATE EXTENSION, ...): those few are
recognized from their tokens; anything else it cannot place is `Unclassified`.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
from collections.abc import Iterator, Sequence

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import SqlglotError
from sqlglot.tokenizer_core import Token, TokenType

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

SQLGLOT_DIALECTS = {
    "postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite",
}
"""sqlglot's dialect for each database the linter knows."""

KEYWORD_FUNCTIONS = frozenset({
    "current_date", "current_time", "current_timestamp", "localtime", "localtimestamp",
    "current_user", "session_user", "user", "current_role", "current_schema",
})
"""SQL's functions written without parentheses, which a parser may take for columns."""

SERIAL_TYPES = frozenset({"SERIAL", "BIGSERIAL", "SMALLSERIAL"})

DATA_CHANGES = (exp.Insert, exp.Update, exp.Delete, exp.Select, exp.Merge, exp.Union)
HARMLESS_STATEMENTS = (exp.Comment, exp.Set, exp.Grant, exp.Revoke, exp.Use, exp.Analyze)


@contextlib.contextmanager
def quiet_sqlglot() -> Iterator[None]:
    """Keep sqlglot's "falling back to Command" warnings out of the runner's output: that a
    statement is not modelled is the linter's to report (unclassified-statement)."""
    logger = logging.getLogger("sqlglot")

    def errors_only(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR

    logger.addFilter(errors_only)
    try:
        yield
    finally:
        logger.removeFilter(errors_only)


def parse_statement(sql: str, dialect: str) -> tuple[Change, ...]:
    """The changes one rendered statement makes (several for a multi-action ALTER TABLE or a
    raw `op.execute` of several statements); call it under quiet_sqlglot()."""
    read = SQLGLOT_DIALECTS[dialect]
    try:
        trees = [tree for tree in _dialect(read).parse(sql) if tree is not None]
    except SqlglotError as exc:
        return (Unclassified(None, reason=f"the parser rejects it: {_first_line(exc)}"),)
    changes: list[Change] = []
    for tree in trees:
        changes.extend(_changes(tree, sql, read))
    return tuple(changes) or (Harmless(None, what="no statement"),)


def parse_type(text: str, dialect: str) -> ColumnType | None:
    """A type as a database or SQLAlchemy spells it ('character varying(20)', 'int(11)',
    'VARCHAR(20)'); None when it cannot be parsed."""
    read = SQLGLOT_DIALECTS[dialect]
    try:
        built = exp.DataType.build(text, dialect=_dialect(read), udt=True)
    except (SqlglotError, ValueError):
        return None
    return _column_type(built, read)


@functools.cache
def _dialect(read: str) -> Dialect:
    """One sqlglot dialect object per dialect, not one per statement."""
    return Dialect.get_or_raise(read)


def _changes(tree: exp.Expr, sql: str, read: str) -> list[Change]:
    if isinstance(tree, exp.Create):
        return [_create(tree, read)]
    if isinstance(tree, exp.Drop):
        return _drop(tree, read)
    if isinstance(tree, exp.Alter):
        return _alter(tree, read)
    if isinstance(tree, exp.Command):
        return _command(sql, read)
    if isinstance(tree, DATA_CHANGES):
        return [Harmless(None, what="data change")]
    if isinstance(tree, HARMLESS_STATEMENTS):
        return [Harmless(None, what=type(tree).__name__.lower())]
    return [Unclassified(None, reason=f"a {type(tree).__name__} statement")]


# CREATE / DROP


def _create(tree: exp.Create, read: str) -> Change:
    kind = str(tree.args.get("kind") or "").upper()
    target = tree.this
    if kind == "TABLE":
        table = target.this if isinstance(target, exp.Schema) else target
        if not isinstance(table, exp.Table):
            return Unclassified(None, reason="CREATE TABLE without a table name")
        references = tuple(
            _table(reference.this.this, read)
            for reference in tree.find_all(exp.Reference)
            if isinstance(reference.this, exp.Schema) and isinstance(reference.this.this, exp.Table)
        )
        return CreateTable(_table(table, read), references=references)
    if kind == "INDEX" and isinstance(target, exp.Index):
        indexed = target.args.get("table")
        if not isinstance(indexed, exp.Table):
            return Unclassified(None, reason="CREATE INDEX without a table")
        params = target.args.get("params")
        columns = tuple(
            _name(ordered.this, read) for ordered in (params.args.get("columns") or [])
        ) if isinstance(params, exp.IndexParameters) else ()
        return CreateIndex(
            _table(indexed, read), index=_name(target.this, read), columns=columns,
            unique=bool(tree.args.get("unique")), concurrently=bool(tree.args.get("concurrently")),
        )
    if kind in ("VIEW", "SEQUENCE", "SCHEMA", "FUNCTION", "PROCEDURE", "TYPE", "DATABASE"):
        return Harmless(None, what=f"CREATE {kind}")
    return Unclassified(None, reason=f"CREATE {kind or '(unknown)'}")


def _drop(tree: exp.Drop, read: str) -> list[Change]:
    kind = str(tree.args.get("kind") or "").upper()
    targets = [t for t in tree.args.get("expressions") or tree.args.get("tables") or []
               if isinstance(t, exp.Table)]
    if kind == "TABLE":
        return [DropTable(_table(t, read)) for t in targets]
    if kind == "INDEX":
        on = tree.args.get("cluster")
        table = _table(on.this, read) if isinstance(on, exp.OnProperty) and isinstance(
            on.this, exp.Table) else None
        return [
            DropIndex(table, index=t.name, concurrently=bool(tree.args.get("concurrently")))
            for t in targets
        ]
    if kind in ("VIEW", "SEQUENCE", "SCHEMA", "FUNCTION", "PROCEDURE", "TYPE"):
        return [Harmless(None, what=f"DROP {kind}")]
    return [Unclassified(None, reason=f"DROP {kind or '(unknown)'}")]


# ALTER TABLE


def _alter(tree: exp.Alter, read: str) -> list[Change]:
    kind = str(tree.args.get("kind") or "").upper()
    if kind != "TABLE":
        return [Harmless(None, what=f"ALTER {kind}")] if kind in (
            "INDEX", "SEQUENCE", "VIEW") else [Unclassified(None, reason=f"ALTER {kind}")]
    target = tree.this
    if not isinstance(target, exp.Table):
        return [Unclassified(None, reason="ALTER TABLE without a table name")]
    table = _table(target, read)
    not_valid = bool(tree.args.get("not_valid"))
    options = tree.args.get("options") or []
    changes: list[Change] = []
    for action in tree.args.get("actions") or []:
        changes.extend(_action(action, table, not_valid, options, read))
    if not changes:
        # Options alone: a table comment, or an engine/charset/row-format change (a rebuild).
        quiet = all(isinstance(option, (exp.SchemaCommentProperty, exp.AlgorithmProperty,
                                         exp.LockProperty)) for option in options)
        changes.append(Harmless(table, what="table comment") if quiet and options else
                       Unclassified(table, reason="an ALTER TABLE option the linter does not"
                                    " judge"))
    return changes


def _action(
    action: exp.Expr, table: TableName, not_valid: bool,
    options: Sequence[exp.Expr], read: str,
) -> list[Change]:
    if isinstance(action, exp.ColumnDef):
        return [_add_column(action, table, read)]
    if isinstance(action, exp.AlterColumn):
        return [_alter_column(action, table, read)]
    if isinstance(action, exp.ModifyColumn):
        return [_redefine_column(action, table, read)]
    if isinstance(action, exp.AddConstraint):
        return [_add_constraint(item, table, not_valid, read) for item in action.expressions]
    if isinstance(action, exp.Drop):
        return _drop_in_alter(action, table, read)
    if isinstance(action, exp.DropPrimaryKey):
        return [Unclassified(table, reason="DROP PRIMARY KEY (MySQL rebuilds the table)")]
    if isinstance(action, exp.AlterRename):
        renamed = action.this
        to_column = [o for o in options if isinstance(o, exp.ToTableProperty)]
        if to_column and isinstance(renamed, exp.Table):
            # PostgreSQL's short form `RENAME col TO new`: sqlglot reads it as a table rename
            # with a TO option.
            target = to_column[0].this
            return [RenameColumn(table, column=_name(renamed.this, read),
                                 new_name=_name(getattr(target, "this", target), read))]
        if isinstance(renamed, exp.Table):
            new = _table(renamed, read)
            return [RenameTable(table, new_name=TableName(new.schema or table.schema, new.name))]
    if isinstance(action, exp.RenameColumn):
        return [RenameColumn(table, column=_name(action.this, read),
                             new_name=_name(action.args.get("to"), read))]
    if isinstance(action, exp.AlterSet):
        return [Unclassified(table, reason="ALTER TABLE ... SET")]
    return [Unclassified(table, reason=f"an ALTER TABLE action ({type(action).__name__})")]


def _add_column(definition: exp.ColumnDef, table: TableName, read: str) -> Change:
    column_type = definition.args.get("kind")
    parsed = _column_type(column_type, read, definition) if isinstance(
        column_type, exp.DataType) else None
    return AddColumn(
        table, column=_name(definition.this, read), type=parsed,
        not_null=_not_null(definition), default=_default(definition, parsed, read),
    )


def _alter_column(action: exp.AlterColumn, table: TableName, read: str) -> Change:
    column = _name(action.this, read)
    dtype = action.args.get("dtype")
    if isinstance(dtype, exp.DataType):
        return AlterColumnType(table, column=column, type=_column_type(dtype, read),
                               using=bool(action.args.get("using")))
    allow_null = action.args.get("allow_null")
    if allow_null is False:
        return SetNotNull(table, column=column)
    if allow_null is True:
        return Harmless(table, what="DROP NOT NULL")
    if action.args.get("default") is not None or action.args.get("drop"):
        return Harmless(table, what="column default")
    if action.args.get("comment") is not None:
        return Harmless(table, what="column comment")
    return Unclassified(table, reason="an ALTER COLUMN form the linter does not judge")


def _redefine_column(action: exp.ModifyColumn, table: TableName, read: str) -> Change:
    definition = action.this
    if not isinstance(definition, exp.ColumnDef):
        return Unclassified(table, reason="MODIFY without a column definition")
    name = _name(definition.this, read)
    old = action.args.get("rename_from")
    column_type = definition.args.get("kind")
    parsed = _column_type(column_type, read, definition) if isinstance(
        column_type, exp.DataType) else None
    return RedefineColumn(
        table, column=_name(old, read) if old is not None else name,
        new_name=name if old is not None and _name(old, read) != name else None,
        type=parsed, not_null=_not_null(definition),
        default=_default(definition, parsed, read),
    )


def _add_constraint(
    item: exp.Expr, table: TableName, not_valid: bool, read: str
) -> Change:
    name: str | None = None
    if isinstance(item, exp.Constraint):
        name = _name(item.this, read)
        inner = [e for e in item.expressions if isinstance(e, exp.Expr)]
        if len(inner) != 1:
            return Unclassified(table, reason="a constraint the linter does not judge")
        item = inner[0]
    if isinstance(item, exp.ForeignKey):
        reference = item.args.get("reference")
        schema = reference.this if isinstance(reference, exp.Reference) else None
        referenced = schema.this if isinstance(schema, exp.Schema) else None
        return AddForeignKey(
            table, name=name, columns=tuple(_name(c, read) for c in item.expressions),
            referenced=_table(referenced, read) if isinstance(referenced, exp.Table) else None,
            referenced_columns=tuple(_name(c, read) for c in schema.expressions) if isinstance(
                schema, exp.Schema) else (),
            not_valid=not_valid,
        )
    if isinstance(item, exp.CheckColumnConstraint):
        return AddCheck(table, name=name, condition=item.this.sql(_dialect(read)),
                        not_valid=not_valid)
    if isinstance(item, exp.UniqueColumnConstraint):
        columns = item.this.expressions if isinstance(item.this, exp.Schema) else []
        if name is None and isinstance(item.this, exp.Schema) and item.this.this is not None:
            name = _name(item.this.this, read)  # MySQL's ADD UNIQUE KEY name (...)
        return AddUnique(table, name=name, columns=tuple(_name(c, read) for c in columns))
    if isinstance(item, exp.PrimaryKey):
        return AddUnique(table, name=name, primary_key=True,
                         columns=tuple(_name(c, read) for c in item.expressions))
    if isinstance(item, exp.IndexColumnConstraint):
        special = str(item.args.get("kind") or "").upper() or None
        return CreateIndex(table, index=_name(item.this, read) if item.this else "",
                           columns=tuple(_name(c, read) for c in item.expressions),
                           special=special)
    return Unclassified(table, reason=f"a {type(item).__name__} constraint")


def _drop_in_alter(action: exp.Drop, table: TableName, read: str) -> list[Change]:
    kind = str(action.args.get("kind") or "").upper()
    targets = action.args.get("expressions") or action.args.get("tables") or []
    if kind == "COLUMN":
        return [DropColumn(table, column=_name(target, read)) for target in targets]
    if kind == "INDEX":
        return [DropIndex(table, index=_name(target, read)) for target in targets]
    if kind in ("CONSTRAINT", "FOREIGN KEY", "CHECK"):
        return [Harmless(table, what=f"DROP {kind}")]
    return [Unclassified(table, reason=f"DROP {kind or '(unknown)'} in ALTER TABLE")]


# Columns


def _column_type(
    dtype: exp.DataType, read: str, definition: exp.ColumnDef | None = None
) -> ColumnType:
    params: list[int] = []
    for param in dtype.expressions:
        value = param.this if isinstance(param, exp.DataTypeParam) else param
        if isinstance(value, exp.Literal) and not value.is_string and value.this.isdigit():
            params.append(int(value.this))
    charset = None
    if definition is not None:
        for constraint in definition.args.get("constraints") or []:
            if isinstance(constraint.args.get("kind"), exp.CharacterSetColumnConstraint):
                charset = constraint.args["kind"].name.lower()
    type_name = dtype.this.name if isinstance(dtype.this, enum.Enum) else str(dtype.this)
    if len(params) == len(dtype.expressions) and type_name != "USERDEFINED":
        # Written from the parts: sqlglot's generator costs as much as the parse.
        text = type_name + (f"({', '.join(map(str, params))})" if params else "")
    else:
        text = dtype.sql(_dialect(read))
    return ColumnType(name=type_name, params=tuple(params), charset=charset, sql=text)


def _not_null(definition: exp.ColumnDef) -> bool:
    for constraint in definition.args.get("constraints") or []:
        kind = constraint.args.get("kind")
        if isinstance(kind, exp.NotNullColumnConstraint) and not kind.args.get("allow_null"):
            return True
        if isinstance(kind, exp.PrimaryKeyColumnConstraint):
            return True
    return False


def _default(
    definition: exp.ColumnDef, column_type: ColumnType | None, read: str
) -> DefaultValue | None:
    if column_type is not None and column_type.name in SERIAL_TYPES:
        return DefaultValue(sql=column_type.name, functions=frozenset({"nextval"}),
                            generated="serial")
    for constraint in definition.args.get("constraints") or []:
        kind = constraint.args.get("kind")
        if isinstance(kind, exp.DefaultColumnConstraint):
            return _value(kind.this, read)
        if isinstance(kind, exp.GeneratedAsIdentityColumnConstraint):
            return DefaultValue(sql="GENERATED AS IDENTITY", generated="identity")
        if isinstance(kind, exp.AutoIncrementColumnConstraint):
            return DefaultValue(sql="AUTO_INCREMENT", generated="auto_increment")
        if isinstance(kind, exp.ComputedColumnConstraint):
            # PostgreSQL's generated columns are always STORED (up to 17).
            stored = read == "postgres" or bool(kind.args.get("persisted"))
            value = _value(kind.this, read)
            return DefaultValue(sql=value.sql, functions=value.functions,
                                reads_columns=value.reads_columns,
                                generated="stored" if stored else "virtual")
    return None


def _value(expression: exp.Expr, read: str) -> DefaultValue:
    functions = set()
    reads_columns = False
    for node in expression.walk():
        if isinstance(node, (exp.Cast, exp.TryCast, exp.Paren)):
            continue
        if isinstance(node, exp.Func):
            functions.add(node.sql(_dialect(read)).split("(", 1)[0].strip().lower())
        elif isinstance(node, exp.Column):
            if node.name.lower() in KEYWORD_FUNCTIONS and not node.table:
                functions.add(node.name.lower())
            else:
                reads_columns = True
    return DefaultValue(sql=expression.sql(_dialect(read)), functions=frozenset(functions),
                        reads_columns=reads_columns)


# Names


def _table(table: exp.Table, read: str) -> TableName:
    schema = table.args.get("db")
    return TableName(_name(schema, read) if schema is not None else None,
                     _name(table.this, read))


def _name(node: exp.Expr | str | None, read: str) -> str:
    """An identifier as the database stores it: PostgreSQL folds an unquoted name to lower
    case; MySQL keeps it as written."""
    if node is None:
        return ""
    if isinstance(node, str):
        return node
    if isinstance(node, (exp.Column, exp.Ordered)) and node.this is not None:
        return _name(node.this, read)
    if isinstance(node, exp.Identifier):
        text = str(node.this)
        return text if node.quoted or read != "postgres" else text.lower()
    return node.name if node.name else node.sql(_dialect(read))


# Statements sqlglot leaves as a Command


def _command(sql: str, read: str) -> list[Change]:
    try:
        words = _Words(_tokens(sql, read), read)
    except SqlglotError as exc:
        return [Unclassified(None, reason=f"the parser rejects it: {_first_line(exc)}")]
    return [_recognized(words)]


def _recognized(words: _Words) -> Change:
    if words.take("ALTER", "TABLE"):
        words.take("IF", "EXISTS")
        words.take("ONLY")
        table = words.table()
        if table is None:
            return Unclassified(None, reason="ALTER TABLE without a table name")
        if words.take("VALIDATE", "CONSTRAINT"):
            return ValidateConstraint(table, name=words.identifier() or "")
        if words.take("ADD", "CHECK"):
            return AddCheck(table, condition=words.rest(), not_valid=words.ends_with(
                "NOT", "VALID"))
        if words.take("ADD", "CONSTRAINT"):
            name = words.identifier()
            primary_key = words.take("PRIMARY", "KEY")
            if (primary_key or words.take("UNIQUE")) and words.take("USING", "INDEX"):
                return AddUnique(table, name=name, primary_key=primary_key,
                                 using_index=words.identifier())
        if words.take("RENAME", "CONSTRAINT"):
            return Harmless(table, what="RENAME CONSTRAINT")
        return Unclassified(table, reason="an ALTER TABLE form the parser does not model")
    if words.take("RENAME", "TABLE"):
        old = words.table()
        new = words.table() if old is not None and words.take("TO") else None
        if old is not None and new is not None and words.done():
            return RenameTable(old, new_name=new)
        return Unclassified(None, reason="a RENAME TABLE form the linter does not judge")
    if words.take("CREATE"):
        special = words.take_any("FULLTEXT", "SPATIAL")
        if special and words.take("INDEX"):
            index = words.identifier() or ""
            if words.take("ON") and (table := words.table()) is not None:
                return CreateIndex(table, index=index, special=special)
        if words.take_any("EXTENSION", "TYPE", "DOMAIN", "COLLATION"):
            return Harmless(None, what="CREATE of a database object")
    if words.take("ALTER", "TYPE") or words.take_any("VACUUM", "ANALYZE"):
        return Harmless(None, what="type or maintenance statement")
    return Unclassified(None, reason="a statement the parser does not model")


def _tokens(sql: str, read: str) -> list[Token]:
    """The statement's tokens; a command keyword's unparsed rest (sqlglot's MySQL tokenizer
    keeps `RENAME TABLE a TO b` as RENAME and one string) is tokenized too."""
    tokens = _dialect(read).tokenize(sql)
    if len(tokens) == 2 and tokens[1].token_type == TokenType.STRING:
        rest = sql.strip()[len(tokens[0].text):].strip()
        if rest == tokens[1].text:
            return [tokens[0], *_dialect(read).tokenize(rest)]
    return tokens


class _Words:
    """A cursor over a statement's tokens, for the few Command forms recognized here."""

    def __init__(self, tokens: list[Token], read: str) -> None:
        self.tokens = tokens
        self.read = read
        self.at = 0

    def _text(self, offset: int = 0) -> str:
        index = self.at + offset
        return self.tokens[index].text.upper() if index < len(self.tokens) else ""

    def take(self, *words: str) -> bool:
        """Consume `words` if they come next, case-insensitively."""
        if all(self._text(i) == word for i, word in enumerate(words)):
            self.at += len(words)
            return True
        return False

    def rest(self) -> str:
        """The text of the tokens not consumed yet."""
        return " ".join(token.text for token in self.tokens[self.at:])

    def ends_with(self, *words: str) -> bool:
        texts = [token.text.upper() for token in self.tokens
                 if token.token_type != TokenType.SEMICOLON]
        return texts[-len(words):] == list(words)

    def done(self) -> bool:
        """Whether every token was consumed (a trailing `;` aside)."""
        return all(token.token_type == TokenType.SEMICOLON for token in self.tokens[self.at:])

    def take_any(self, *words: str) -> str | None:
        for word in words:
            if self.take(word):
                return word
        return None

    def identifier(self) -> str | None:
        if self.at >= len(self.tokens):
            return None
        token = self.tokens[self.at]
        if token.token_type not in (TokenType.VAR, TokenType.IDENTIFIER) and not (
            token.text.replace("_", "").isalnum()
        ):
            return None
        self.at += 1
        quoted = token.token_type == TokenType.IDENTIFIER
        return token.text if quoted or self.read != "postgres" else token.text.lower()

    def table(self) -> TableName | None:
        first = self.identifier()
        if first is None:
            return None
        if self.take("."):
            second = self.identifier()
            return TableName(first, second) if second else None
        return TableName(None, first)


def _first_line(exc: SqlglotError) -> str:
    """The parser's complaint, without the terminal highlighting sqlglot puts in messages."""
    errors = getattr(exc, "errors", None)
    text = str(errors[0].get("description", exc)) if errors else str(exc)
    return " ".join(text.split())[:200]

"""The scripts' heads read from the revision files' text, without importing them or Alembic.

Alembic imports every revision file to learn its identifiers; this module reads the same
four module-level names (`revision`, `down_revision`, `branch_labels`, `depends_on`) with
`ast` instead, and answers None ("doubt") for any file or directory it cannot read with
certainty, so that the caller falls back to Alembic itself.
"""

from __future__ import annotations

import ast
import builtins
import configparser
import re
import sys
from dataclasses import dataclass
from pathlib import Path

# Alembic's own rule for a revision file (alembic.script.base._only_source_rev_file):
# any name ending in .py, except editor lock files (.#) and __init__.
_REVISION_FILE = re.compile(r"(?!\.\#|__init__)(.*\.py)$")
# alembic.script.revision._revision_illegal_chars
_ILLEGAL_IN_REVISION = frozenset("@-+:")
_IDENTIFIERS = ("revision", "down_revision", "branch_labels", "depends_on")
# [alembic] options that change which files are revisions: read by Alembic, not by us.
_UNSUPPORTED_OPTIONS = ("version_locations", "sourceless", "recursive_version_locations")
# Modules a revision file may import at module level: importing them cannot fail here
# (the runner depends on them), so a file that imports only these imports cleanly.
_SAFE_IMPORTS = frozenset({"alembic", "sqlalchemy", *sys.stdlib_module_names})


@dataclass(frozen=True)
class RevisionRecord:
    """One revision file's identifiers, as Alembic's Revision holds them."""

    revision: str
    down_revisions: tuple[str, ...]
    branch_labels: tuple[str, ...]
    depends_on: tuple[str, ...]


def read_heads(migrations_directory: Path) -> tuple[str, ...] | None:
    """The heads `ScriptDirectory.get_heads()` would return, or None on any doubt."""
    if _alembic_options_doubt(migrations_directory / "alembic.ini"):
        return None
    versions = migrations_directory / "versions"
    if not versions.is_dir():
        return None
    records: list[RevisionRecord] = []
    seen_files: set[Path] = set()
    # Every entry but directories, as os.walk lists files: a broken symlink counts (and
    # makes Alembic fail), a symlink to a directory does not.
    for path in sorted(entry for entry in versions.iterdir() if not entry.is_dir()):
        if not _REVISION_FILE.match(path.name):
            continue
        real = path.resolve()
        if real in seen_files:  # Alembic skips a file it reached twice (symlinks)
            continue
        seen_files.add(real)
        record = read_revision_file(path)
        if record is None:
            return None
        records.append(record)
    return heads_of(records)


def heads_of(records: list[RevisionRecord]) -> tuple[str, ...] | None:
    """Revisions no other revision names as its down_revision, in file order; None if the
    history is one Alembic rejects (duplicates, unknown references, clashing labels, cycles).

    `depends_on` does not make a revision a non-head (Alembic's get_heads() without
    consider_depends_on), but it must name a known revision or branch label.
    """
    by_id = {record.revision: record for record in records}
    if len(by_id) != len(records) or not records:
        return None
    labels: set[str] = set()
    for record in records:
        for label in record.branch_labels:
            if label in by_id or label in labels:
                return None
            labels.add(label)
    for record in records:
        if any(down not in by_id for down in record.down_revisions):
            return None
        if any(dep not in by_id and dep not in labels for dep in record.depends_on):
            return None
    if _has_cycle(by_id):
        return None
    lowered = {down for record in records for down in record.down_revisions}
    return tuple(record.revision for record in records if record.revision not in lowered)


def read_revision_file(path: Path) -> RevisionRecord | None:
    """The identifiers of one revision file, or None unless importing it certainly gives them.

    Certain means: at module level only a docstring, imports of modules the runner itself
    depends on (or the standard library), undecorated defs, and assignments that call
    nothing and read only names bound above; the four identifiers are literals. Nothing in a
    function body runs at import time, so function bodies are not read.
    """
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None
    values: dict[str, object] = {}
    bound = set(dir(builtins))  # the names a module-level expression may read
    lazy_annotations = False
    for statement in tree.body:
        if isinstance(statement, ast.Assign | ast.AnnAssign):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            names = [target.id for target in targets if isinstance(target, ast.Name)]
            if len(names) != len(targets) or statement.value is None:
                return None  # unpacking, attributes, subscripts, bare annotations
            annotation = getattr(statement, "annotation", None)
            if annotation is not None and not lazy_annotations and not _reads_only(
                annotation, bound
            ):
                return None  # an annotation is evaluated at import time
            if set(names) & set(_IDENTIFIERS):
                if len(names) != 1 or names[0] in values:
                    return None
                try:
                    values[names[0]] = ast.literal_eval(statement.value)
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    return None
            elif not _reads_only(statement.value, bound):
                return None
            bound.update(names)
        elif _harmless(statement, bound, lazy_annotations):
            bound.update(_bound_names(statement))
            if isinstance(statement, ast.ImportFrom) and statement.module == "__future__":
                lazy_annotations |= any(a.name == "annotations" for a in statement.names)
        else:
            return None
    return _record(values)


def _record(values: dict[str, object]) -> RevisionRecord | None:
    """Check the literal values as Alembic's Revision does; None where it would fail."""
    revision = values.get("revision")
    if not isinstance(revision, str) or not revision or set(revision) & _ILLEGAL_IN_REVISION:
        return None  # a missing revision falls back to Alembic's legacy file-name rule
    fields = [_names(values.get(key)) for key in _IDENTIFIERS[1:]]
    if any(field is None for field in fields):
        return None
    down, labels, depends = (field or () for field in fields)
    if revision in down or revision in depends:
        return None  # Alembic: LoopDetected / DependencyLoopDetected
    return RevisionRecord(revision, tuple(dict.fromkeys(down)), labels, depends)


def _names(value: object) -> tuple[str, ...] | None:
    """None, one name or a tuple/list of names as a tuple (alembic.util.to_tuple); else None."""
    if value is None:
        return ()
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, tuple | list) or not all(
        isinstance(item, str) and item for item in items
    ):
        return None
    return tuple(items)


def _harmless(statement: ast.stmt, bound: set[str], lazy_annotations: bool) -> bool:
    """Whether a module-level statement, other than an assignment, certainly runs without
    error: a docstring, an import of a safe module, an undecorated def."""
    if isinstance(statement, ast.Expr):
        return isinstance(statement.value, ast.Constant)
    if isinstance(statement, ast.Import):
        return all(alias.name.split(".")[0] in _SAFE_IMPORTS for alias in statement.names)
    if isinstance(statement, ast.ImportFrom):
        return (
            statement.level == 0
            and (statement.module or "").split(".")[0] in _SAFE_IMPORTS
            and all(alias.name != "*" for alias in statement.names)
        )
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
        arguments = statement.args
        evaluated = [*arguments.defaults, *(d for d in arguments.kw_defaults if d is not None)]
        if not lazy_annotations:
            every = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                     arguments.vararg, arguments.kwarg]
            evaluated += [a.annotation for a in every if a is not None and a.annotation]
            evaluated += [statement.returns] if statement.returns else []
        # Decorators, defaults and eager annotations run at import time.
        return not statement.decorator_list and all(
            _reads_only(expression, bound) for expression in evaluated
        )
    return isinstance(statement, ast.Pass)


def _reads_only(expression: ast.expr, bound: set[str]) -> bool:
    """Whether evaluating an expression calls nothing and reads only bound names."""
    for node in ast.walk(expression):
        if isinstance(node, ast.Name) and node.id not in bound:
            return False
        if isinstance(node, ast.Call | ast.Lambda | ast.NamedExpr):
            return False
    return True


def _bound_names(statement: ast.stmt) -> list[str]:
    """The names an import or a def binds."""
    if isinstance(statement, ast.Import | ast.ImportFrom):
        return [alias.asname or alias.name.split(".")[0] for alias in statement.names]
    if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
        return [statement.name]
    return []


def _has_cycle(by_id: dict[str, RevisionRecord]) -> bool:
    """Whether following down_revisions and depends_on ever comes back (Alembic rejects it)."""
    labelled = {label: record.revision for record in by_id.values()
                for label in record.branch_labels}

    def below(revision: str) -> list[str]:
        record = by_id[revision]
        return [*record.down_revisions, *(labelled.get(d, d) for d in record.depends_on)]

    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in by_id:
        if start in state:
            continue
        state[start] = 1
        stack = [(start, iter(below(start)))]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state.get(child) == 1:
                return True
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(below(child))))
    return False


def _alembic_options_doubt(ini: Path) -> bool:
    """Whether alembic.ini is unreadable or sets an option that changes which files count."""
    if not ini.is_file():
        return False  # Flask-Migrate's Config then has no [alembic] options of its own
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(ini, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError):
        return True
    if not parser.has_section("alembic"):
        return False
    return any(parser.has_option("alembic", option) for option in _UNSUPPORTED_OPTIONS)

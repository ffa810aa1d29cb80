"""The scripts' heads read from the revision files' text agree with Alembic's, or doubt."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from runner.script_heads import read_heads, read_revision_file
from support import EXAMPLE

REVISION_FILE = '''"""{slug}

Revision ID: {revision}
"""
{imports}

# revision identifiers, used by Alembic.
{assignments}


def upgrade() -> None:
    op.execute("SELECT 1")


def downgrade() -> None:
    pass
'''


def value_text(values: list[str], style: int) -> str:
    """One way of writing an identifier's value in Python: None, a string, a tuple, a list."""
    if not values:
        return ("None", "()", "[]")[style % 3]
    if len(values) == 1 and style % 2 == 0:
        return repr(values[0])
    if style % 3 == 0:
        return "[" + ", ".join(map(repr, values)) + "]"
    return "(" + ", ".join(map(repr, values)) + ",)"


def revision_file(
    revision: str,
    down: list[str],
    depends: list[str] = (),  # type: ignore[assignment]
    labels: list[str] = (),  # type: ignore[assignment]
    style: int = 0,
) -> str:
    """A revision file as `flask db revision` writes it, in one of several styles."""
    annotated = style % 2 == 1
    imports = "from alembic import op\nimport sqlalchemy as sa"
    if annotated:
        imports = "from typing import Sequence, Union\n\n" + imports
    annotations = (": str", ": Union[str, Sequence[str], None]") if annotated else ("", "")
    lines = [f"revision{annotations[0]} = {revision!r}"]
    for name, values in (("down_revision", down), ("branch_labels", labels),
                         ("depends_on", depends)):
        lines.append(f"{name}{annotations[1]} = {value_text(list(values), style)}")
    return REVISION_FILE.format(slug=revision, revision=revision, imports=imports,
                                assignments="\n".join(lines))


def alembic_heads(versions_parent: Path) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(ScriptDirectory(str(versions_parent)).get_heads())


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[str, list[str], list[str], list[str], int]]:
    """Histories Alembic accepts: branches, merges, several bases, depends_on, labels."""
    count = draw(st.integers(min_value=1, max_value=12))
    names = draw(st.lists(st.text("0123456789abcdef", min_size=4, max_size=12),
                          min_size=count, max_size=count, unique=True))
    history = []
    for index, name in enumerate(names):
        earlier = names[:index]
        down = draw(st.lists(st.sampled_from(earlier), max_size=3, unique=True)) if earlier else []
        depends = (draw(st.lists(st.sampled_from(earlier), max_size=2, unique=True))
                   if earlier else [])
        # A label names a base's branch: Alembic refuses two labels on one line of history.
        labels = [f"branch_{name}"] if not down and draw(st.booleans()) else []
        history.append((name, down, depends, labels, draw(st.integers(0, 5))))
    return history


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories())
def test_heads_match_alembic_on_generated_histories(
    history: list[tuple[str, list[str], list[str], list[str], int]],
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        versions = Path(directory) / "versions"
        versions.mkdir()
        for revision, down, depends, labels, style in history:
            (versions / f"{revision}_step.py").write_text(
                revision_file(revision, down, depends, labels, style)
            )
        try:
            expected = alembic_heads(Path(directory))
        except CommandError:
            event("Alembic rejects the history")
            assert read_heads(Path(directory)) is None
            return
        event(f"{len(expected)} head(s)")
        assert read_heads(Path(directory)) == tuple(expected)


def test_the_example_has_alembics_heads() -> None:
    for migrations in (EXAMPLE / "migrations", EXAMPLE / "migrations_multidb"):
        assert read_heads(migrations) == tuple(alembic_heads(migrations))


def test_depends_on_does_not_make_a_revision_a_non_head(tmp_path: Path) -> None:
    write(tmp_path, "a1", [])
    write(tmp_path, "b2", [], depends=["a1"])
    assert read_heads(tmp_path) == tuple(alembic_heads(tmp_path)) == ("a1", "b2")


def test_only_the_files_alembic_reads_count(tmp_path: Path) -> None:
    write(tmp_path, "a1", [])
    versions = tmp_path / "versions"
    # None of these is a revision for Alembic: a head among them must not count.
    for ignored in ("__init__.py", ".#b2_lock.py", "b2_step.txt", "b2_step.py~"):
        (versions / ignored).write_text(revision_file("b2", ["a1"]))
    (versions / "sub").mkdir()
    (versions / "sub" / "c3_step.py").write_text(revision_file("c3", ["a1"]))
    (versions / "__pycache__").mkdir()
    (versions / "__pycache__" / "d4_step.py").write_text(revision_file("d4", ["a1"]))
    (versions / "a1_again.py").symlink_to(versions / "a1_step.py")
    assert read_heads(tmp_path) == tuple(alembic_heads(tmp_path)) == ("a1",)


def write(directory: Path, revision: str, down: list[str], depends: list[str] = (),  # type: ignore[assignment]
          text: str | None = None) -> Path:
    versions = directory / "versions"
    versions.mkdir(exist_ok=True)
    path = versions / f"{revision}_step.py"
    path.write_text(text if text is not None else revision_file(revision, down, depends))
    return path


DOUBTFUL_FILES = {
    "a value that is not a literal": "revision = 'b2'\ndown_revision = 'a' + '1'\n",
    "a value read from a name": "A = 'a1'\nrevision = 'b2'\ndown_revision = A\n",
    "a syntax error": "revision = 'b2'\ndown_revision = 'a1'\ndef upgrade(:\n",
    "an identifier assigned twice": "revision = 'b2'\nrevision = 'b3'\ndown_revision = 'a1'\n",
    "no revision (Alembic's legacy file-name rule)": "down_revision = 'a1'\n",
    "an empty revision": "revision = ''\ndown_revision = 'a1'\n",
    "an illegal character": "revision = 'b-2'\ndown_revision = 'a1'\n",
    "a number for a revision": "revision = 2\ndown_revision = 'a1'\n",
    "an empty down_revision string": "revision = 'b2'\ndown_revision = ''\n",
    "unpacking": "revision, down_revision = 'b2', 'a1'\n",
    "a conditional": "revision = 'b2'\nif True:\n    down_revision = 'a1'\n",
    "a star import": "from alembic.op import *\nrevision = 'b2'\ndown_revision = 'a1'\n",
    "an import that may fail": "import myapp.models\nrevision = 'b2'\ndown_revision = 'a1'\n",
    "a relative import": "from . import helpers\nrevision = 'b2'\ndown_revision = 'a1'\n",
    "a module-level call": "import sqlalchemy as sa\nkind = sa.Enum('x', name='k')\n"
                           "revision = 'b2'\ndown_revision = 'a1'\n",
    "a statement run at import": "print('hi')\nrevision = 'b2'\ndown_revision = 'a1'\n",
    "a decorator": "import functools\n@functools.cache\ndef upgrade(): pass\n"
                   "revision = 'b2'\ndown_revision = 'a1'\n",
    "an annotation naming nothing imported": "revision: str = 'b2'\n"
                                             "down_revision: Union[str, None] = 'a1'\n",
    "a default naming nothing imported": "def upgrade(x=nothing): pass\n"
                                         "revision = 'b2'\ndown_revision = 'a1'\n",
    "a class": "class Helper: pass\nrevision = 'b2'\ndown_revision = 'a1'\n",
    "its own down_revision": "revision = 'b2'\ndown_revision = 'b2'\n",
    "a dict for depends_on": "revision = 'b2'\ndown_revision = 'a1'\ndepends_on = {'a1': 1}\n",
}


@pytest.mark.parametrize("text", DOUBTFUL_FILES.values(), ids=DOUBTFUL_FILES.keys())
def test_a_file_it_cannot_read_with_certainty_is_a_doubt(tmp_path: Path, text: str) -> None:
    write(tmp_path, "a1", [])
    path = write(tmp_path, "b2", [], text=text)
    assert read_revision_file(path) is None
    assert read_heads(tmp_path) is None


def test_lazy_annotations_need_no_import(tmp_path: Path) -> None:
    text = ("from __future__ import annotations\nrevision: str = 'b2'\n"
            "down_revision: Union[str, None] = 'a1'\n")
    write(tmp_path, "a1", [])
    write(tmp_path, "b2", [], text=text)
    assert read_heads(tmp_path) == tuple(alembic_heads(tmp_path)) == ("b2",)


FAULTY_HISTORIES = {
    "a duplicate revision": [("a1", [], []), ("a1", [], [])],
    "an unknown down_revision": [("a1", [], []), ("b2", ["zz"], [])],
    "an unknown depends_on": [("a1", [], []), ("b2", ["a1"], ["zz"])],
    "a cycle": [("a1", ["c3"], []), ("b2", ["a1"], []), ("c3", ["b2"], [])],
    "a dependency cycle": [("a1", [], ["b2"]), ("b2", ["a1"], [])],
}


@pytest.mark.parametrize("history", FAULTY_HISTORIES.values(), ids=FAULTY_HISTORIES.keys())
def test_a_history_alembic_rejects_or_warns_about_is_a_doubt(
    tmp_path: Path, history: list[tuple[str, list[str], list[str]]]
) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    for index, (revision, down, depends) in enumerate(history):
        (versions / f"{revision}_{index}.py").write_text(revision_file(revision, down, depends))
    # Alembic raises several kinds of error here, or warns (a duplicate revision).
    with warnings.catch_warnings(), pytest.raises(Exception):  # noqa: B017
        warnings.simplefilter("error")
        ScriptDirectory(str(tmp_path)).get_heads()
    assert read_heads(tmp_path) is None


def test_a_broken_symlink_is_a_doubt(tmp_path: Path) -> None:
    write(tmp_path, "a1", [])
    (tmp_path / "versions" / "b2_step.py").symlink_to(tmp_path / "nowhere.py")
    with pytest.raises(ImportError):
        alembic_heads(tmp_path)
    assert read_heads(tmp_path) is None


def test_no_revisions_is_a_doubt(tmp_path: Path) -> None:
    (tmp_path / "versions").mkdir()
    assert read_heads(tmp_path) is None
    assert read_heads(tmp_path / "missing") is None


@pytest.mark.parametrize("option", ["version_locations = %(here)s/other", "sourceless = true",
                                    "recursive_version_locations = true"])
def test_alembic_options_that_change_which_files_count_are_a_doubt(
    tmp_path: Path, option: str
) -> None:
    write(tmp_path, "a1", [])
    assert read_heads(tmp_path) == ("a1",)
    (tmp_path / "alembic.ini").write_text(f"[alembic]\n{option}\n")
    assert read_heads(tmp_path) is None

"""`# runner: allow RULE -- reason` comments in revision files."""

from __future__ import annotations

from pathlib import Path

from runner.lint.allow import allowances_in, read_allowances

REVISION = '''"""add index"""
from alembic import op


def helper():
    op.drop_column("entry", "legacy")  # runner: allow ban-drop-column -- unused since 2.3


def upgrade():
    op.create_index("ix", "entry", ["a"])
    # runner: allow require-concurrent-index-creation, adding-required-field -- 40 rows
    helper()
    # runner: allow renaming-table
    # runner: allow renaming-column --


# runner: allow ban-drop-table -- outside upgrade, on its own line
def downgrade():
    pass
'''


def test_a_comment_inside_upgrade_covers_the_revision() -> None:
    allowances = allowances_in(REVISION)
    assert allowances.allows("require-concurrent-index-creation", None)
    assert allowances.allows("adding-required-field", 99)
    assert not allowances.allows("ban-drop-table", 21)


def test_a_comment_elsewhere_covers_its_own_line() -> None:
    allowances = allowances_in(REVISION)
    assert allowances.allows("ban-drop-column", 6)
    assert not allowances.allows("ban-drop-column", 12)
    assert allowances.allows("ban-drop-table", 17)


def test_without_a_reason_nothing_is_allowed() -> None:
    allowances = allowances_in(REVISION)
    for rule in ("renaming-table", "renaming-column"):
        assert not allowances.allows(rule, 13)
        comment = allowances.without_reason(rule, 13)
        assert comment is not None and comment.in_upgrade


def test_a_file_without_comments_or_unreadable(tmp_path: Path) -> None:
    plain = tmp_path / "plain.py"
    plain.write_text("def upgrade():\n    pass\n")
    assert read_allowances(str(plain)).comments == ()
    assert read_allowances(str(tmp_path / "missing.py")).comments == ()

"""Offline mode: Alembic's `--sql` script for a revision range, without a connection."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import TextIO

import sqlalchemy as sa
from alembic import command
from alembic.util import CommandError

from runner.errors import ConfigError
from runner.revisions import load_migrations
from runner.settings import Settings


def write_sql(
    settings: Settings, out: TextIO, from_revision: str | None = None,
    to_revision: str | None = None,
) -> None:
    """Write the SQL that upgrades from `from_revision` (base) to `to_revision` (head) to `out`."""
    migrations = load_migrations(settings)
    for flag, revision in (("--from", from_revision), ("--to", to_revision)):
        if revision is not None:
            try:
                migrations.script.get_revision(revision)
            except CommandError as exc:
                raise ConfigError(f"{flag} {revision}: {exc}") from None
    target = to_revision or "head"
    if from_revision is not None:
        target = f"{from_revision}:{target}"
    # Rendered whole before any of it is written, so a failure prints no half script.
    rendered = io.StringIO()
    migrations.config.output_buffer = rendered
    # A multi-database env.py writes one <bind>.sql file per database into the working
    # directory instead of to the buffer: run it in a scratch directory and collect them.
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        try:
            with settings.app.app_context():
                command.upgrade(migrations.config, target, sql=True)
        except (CommandError, NotImplementedError, sa.exc.SQLAlchemyError, ValueError) as exc:
            raise ConfigError(
                f"these migrations cannot be rendered as offline SQL: {type(exc).__name__}:"
                f" {' '.join(str(exc).split())} (they need a live database: use 'runner"
                " migrate', or give the range with --from/--to around them)"
            ) from None
        for path in sorted(Path(scratch).glob("*.sql"), key=lambda p: p.name):
            # The default database's file is named ".sql": an empty bind name.
            name = path.name.removesuffix(".sql") or "(default)"
            rendered.write(f"-- database: {name}\n{path.read_text()}\n")
    out.write(rendered.getvalue())

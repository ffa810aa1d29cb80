"""Offline mode: Alembic's `--sql` script for a revision range, without a connection."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import TextIO

import sqlalchemy as sa
from alembic.util import CommandError

from runner.errors import ConfigError
from runner.log import preserved_logging
from runner.revisions import Migrations, run_upgrade


def write_sql(
    migrations: Migrations, out: TextIO, from_revision: str | None = None,
    to_revision: str | None = None,
) -> None:
    """Write the SQL that upgrades from `from_revision` (base) to `to_revision` (head) to `out`."""
    for flag, revision in (("--from", from_revision), ("--to", to_revision)):
        if revision is not None:
            try:
                migrations.script.get_revision(revision)
            except CommandError as exc:
                raise ConfigError(f"{flag} {revision}: {exc}") from None
    if from_revision is not None and to_revision is not None:
        _require_after(migrations, from_revision, to_revision)
    # Rendered whole before any of it is written, so a failure prints no half script.
    rendered = io.StringIO()
    migrations.config.output_buffer = rendered
    # A multi-database env.py writes one <bind>.sql file per database into the working
    # directory instead of to the buffer: run it in a scratch directory and collect them.
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        try:
            with preserved_logging(), migrations.app.flask_app.app_context():
                run_upgrade(migrations, to_revision or "head", from_revision, sql=True)
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


def _require_after(migrations: Migrations, from_revision: str, to_revision: str) -> None:
    """ConfigError unless `to_revision` comes after `from_revision` in the history."""
    script = migrations.script
    to_rev = script.get_revision(to_revision)
    from_rev = script.get_revision(from_revision)
    ancestors = {rev.revision for rev in script.iterate_revisions(to_revision, "base")}
    if from_rev is None or to_rev is None or to_rev.revision == from_rev.revision or (
        from_rev.revision not in ancestors
    ):
        raise ConfigError(
            f"--to {to_revision} does not come after --from {from_revision}: give --from an"
            " older revision than --to (see 'runner status' for the order)"
        )

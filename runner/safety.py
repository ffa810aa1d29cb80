"""The safety check in the runner: `runner lint`, and the gate before an upgrade.

The engine is runner.lint (sqlglot, imported only here, only when something is pending).
The gate runs under the migration lock, after the re-check: it renders the pending range,
reads the live tables on the runner's own connection (runner.drivers, inside the lock's
transaction on PostgreSQL: a savepoint rolled back releases what the reading took), logs
each finding as `lint.finding`, and with RUNNER_LINT=block refuses an error (exit 8).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runner.errors import ConfigError, UnsafeMigration
from runner.log import emit

if TYPE_CHECKING:
    from runner.drivers import Driver
    from runner.lint import LintReport
    from runner.revisions import Migrations, RevisionState
    from runner.settings import Settings


def lint(settings: Settings, migrations: Migrations, from_revision: str | None,
         to_revision: str | None, driver: Driver | None) -> LintReport:
    """Judge the revisions after `from_revision` (base) up to `to_revision` (head), against
    the live database on `driver`, or offline (None: sizes unknown, the version assumed)."""
    from runner import lint as engine
    from runner.revisions import quiet_alembic

    unknown = settings.lint_allow - set(engine.RULES)
    if unknown:
        raise ConfigError(f"RUNNER_LINT_ALLOW names no rule {', '.join(sorted(unknown))}:"
                          f" use rule ids such as {', '.join(sorted(engine.RULES)[:3])}")
    dialect = migrations.app.database_url.backend
    try:
        # Rendering runs env.py offline: its "Running upgrade" lines would read as the
        # upgrade's own.
        with quiet_alembic():
            rendered = engine.render_range(migrations.config, migrations.script,
                                           migrations.app.flask_app, dialect, from_revision,
                                           to_revision)
    except engine.RenderError as error:
        raise ConfigError(f"the revisions cannot be rendered to lint them: {error}") from None
    facts = None
    if driver is not None and driver.backend != "sqlite":  # SQLite: no sizes to read
        with driver.reading() as cursor:
            facts = engine.read_facts(cursor, driver.url.backend, rendered.tables)
    return engine.judge(rendered, facts, engine.LintSettings(
        large_table_rows=settings.lint_large_table_rows, allow=settings.lint_allow))


def gate(settings: Settings, migrations: Migrations, state: RevisionState, driver: Driver
         ) -> None:
    """Before the upgrade (RUNNER_LINT warn or block): lint what is pending, log each finding;
    UnsafeMigration (exit 8) when blocking and a finding is an error."""
    if settings.lint == "off" or driver.backend == "sqlite":
        return
    current = state.databases[0].current if state.databases else ()
    try:
        report = lint(settings, migrations, current[0] if len(current) == 1 else None, None,
                      driver)
    except Exception as error:  # in warn mode, nothing of the check's may stop an upgrade
        if settings.lint == "block":
            raise
        reason = error.message if isinstance(error, ConfigError) else (
            f"{type(error).__name__}: {' '.join(str(error).split())}")
        emit("lint.unavailable", f"the safety check could not run, the upgrade goes on:"
             f" {reason}", level="warning")
        return
    for finding in report.findings:
        fields = {key: value for key, value in finding.as_dict().items() if key != "message"}
        # A warning line whatever the finding's severity (a field): in warn mode the
        # upgrade goes on, in block mode lint.refused is the error.
        emit("lint.finding", f"{finding.rule} {finding.severity}: {finding.message}",
             level="warning", **fields)
    errors = [finding for finding in report.findings if finding.severity == "error"]
    if errors and settings.lint == "block":
        first = errors[0]
        raise UnsafeMigration(
            f"refused by the safety check (RUNNER_LINT=block): revision {first.revision}"
            f" {first.rule}: {first.message} ({len(errors)} error(s); fix the revision, or"
            f" acknowledge it with '# runner: allow {first.rule} -- reason', or set"
            " RUNNER_LINT=warn)", rule=first.rule, revision=first.revision)


def lint_command(settings: Settings, from_revision: str | None, to_revision: str | None,
                 offline: bool) -> LintReport:
    """`runner lint`: offline over every revision (or after `from_revision`); connected
    over the pending ones, against the live tables."""
    from runner import wait
    from runner.revisions import load, read_state
    from runner.target import target_for

    if offline:
        return lint(settings, load(settings), from_revision, to_revision, None)
    target = target_for(settings)
    with wait.connected(settings, target.url, target.table, target.source) as driver:
        migrations = target.app_migrations(settings)
        if from_revision is None:
            current = read_state(migrations, settings.allow_newer_database).current
            from_revision = current[0] if len(current) == 1 else None
        return lint(settings, migrations, from_revision, to_revision, driver)

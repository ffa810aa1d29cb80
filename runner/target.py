"""Before connecting: which database, which version table, and what is known of its scripts
without loading the app (a valid manifest), or the app itself when only it knows the URL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runner import manifest, signals, wait
from runner.drivers import Driver, VersionTable
from runner.history import History, Verdict
from runner.settings import APP_URI, Settings
from runner.urls import DatabaseUrl

if TYPE_CHECKING:
    from runner.revisions import Migrations


@dataclass(frozen=True)
class Target:
    """The database the runner connects to first, and what it knows of it."""

    url: DatabaseUrl
    source: str
    """Where the URL came from (a flag, a variable, a file, the app's config), for hints."""
    table: VersionTable
    history: History | None = None
    """The scripts' heads and revisions from a valid manifest of a single-database app:
    enough to tell "at head" with one query, without the app."""
    migrations: Migrations | None = None
    """The app and its migrations, when the app had to be loaded first (only it knows the
    URL): its env.py then reads the state."""
    manifest: manifest.Manifest | None = None

    def at_head(self, settings: Settings, driver: Driver,
                sleep: Callable[[float], None] = signals.sleep) -> bool:
        """Whether the manifest's history shows the database at head, by one reading of the
        version table (retried within the wait); False without a manifest."""
        if self.history is None:
            return False
        current = wait.retry_policy(settings.remaining(settings.wait_timeout), sleep)(
            driver.read_versions, self.table)
        return self.history.verdict(current) is Verdict.AT_HEAD

    def app_migrations(self, settings: Settings) -> Migrations:
        """The app and its migrations: loaded already, or now."""
        from runner.revisions import load

        return self.migrations or load(settings)


def target_for(settings: Settings) -> Target:
    """What to connect to and what is known; the app is loaded only when it alone knows
    the URL."""
    recorded = manifest.read(settings.app, settings.directory)
    url = settings.runner_url
    if url is not None and url.relative_file:
        url = None if recorded is None else url.in_folder(recorded.instance_path)
    if url is None:
        from runner.revisions import load

        migrations = load(settings)
        return Target(url=migrations.app.database_url, source=APP_URI,
                      table=migrations.version_table, migrations=migrations, manifest=recorded)
    if recorded is None:
        return Target(url=url, source=settings.runner_url_source, table=VersionTable())
    history = None if recorded.binds else History(heads=frozenset(recorded.heads),
                                                  known=recorded.revisions)
    return Target(url=url, source=settings.runner_url_source, table=recorded.version_table,
                  history=history, manifest=recorded)

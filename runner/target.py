"""Before connecting: which database, which version table, and what is known of its scripts
without loading the app (a valid manifest), or the app itself when only it knows the URL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runner import manifest
from runner.drivers import VersionTable
from runner.history import History
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
    why_no_manifest: str = ""


def target_for(settings: Settings, load: Callable[[Settings], Migrations]) -> Target:
    """What to connect to and what is known; `load` loads the app and its migrations, called
    only when the URL is known to the app alone."""
    recorded, why = manifest.read(settings.app, settings.directory)
    url = settings.runner_url
    if url is not None and url.relative_file:
        url = None if recorded is None else url.in_folder(recorded.instance_path)
    if url is None:
        migrations = load(settings)
        app = migrations.app
        chosen = app.database_url
        return Target(url=chosen, source=APP_URI, table=migrations.version_table,
                      migrations=migrations, manifest=recorded, why_no_manifest=why)
    if recorded is None:
        return Target(url=url, source=settings.runner_url_source, table=VersionTable(),
                      why_no_manifest=why)
    history = None if recorded.binds else History(heads=frozenset(recorded.heads),
                                                  known=recorded.revisions)
    return Target(url=url, source=settings.runner_url_source, table=recorded.version_table,
                  history=history, manifest=recorded)

"""What only the app knows, recorded once (`runner prepare`), so a start need not load it.

Loading the app is the only way to know what it configures: the migrations directory,
the version table (Migrate's arguments, set in code or by a `@migrate.configure`
callback), the binds, the instance folder, and the heads Alembic computes from the
revision files. The manifest records them with a digest of every file they came from:
the revision files and their directories' listings, env.py, alembic.ini, .flaskenv/.env
and the app's own modules. A start whose files all match (size and mtime, else content)
takes the manifest's word; any difference, and the app is loaded as without one.

What no digest can see: an app that picks its migration configuration from environment
variables that differ between `runner prepare` and the start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import runner
from runner.drivers import VersionTable
from runner.errors import ConfigError

if TYPE_CHECKING:
    from runner.revisions import Migrations

FILE_NAME = ".migrate-runner.json"
"""The manifest's name, in the working directory (where `flask` looks for the app too)."""

FORMAT = 1


@dataclass(frozen=True)
class Manifest:
    """The app's migration configuration, as the app gave it when it was last loaded."""

    app: str | None
    """FLASK_APP it was made for (None: flask's default lookup)."""
    directory: str | None
    """RUNNER_MIGRATIONS_DIR/--directory it was made for."""
    migrations_directory: str
    version_table: VersionTable
    binds: tuple[str, ...]
    heads: tuple[str, ...]
    revisions: frozenset[str]
    instance_path: str
    files: dict[str, tuple[int, int, str]] = field(default_factory=dict, repr=False)
    """Every file it was computed from: its size, mtime (ns) and SHA-256."""
    listings: dict[str, list[str]] = field(default_factory=dict, repr=False)
    """Every directory Alembic reads revisions from: its entries."""

    def as_json(self) -> str:
        """The manifest as the file holds it."""
        return json.dumps({
            "format": FORMAT, "runner": runner.__version__, "cwd": os.getcwd(),
            "app": self.app, "directory": self.directory,
            "migrations_directory": self.migrations_directory,
            "version_table": self.version_table.name,
            "version_table_schema": self.version_table.schema,
            "binds": list(self.binds), "heads": list(self.heads),
            "revisions": sorted(self.revisions), "instance_path": self.instance_path,
            "files": self.files, "listings": self.listings,
        }, indent=1, sort_keys=True)


def path() -> Path:
    """Where the manifest of the app started in this working directory lives."""
    return Path(FILE_NAME).absolute()


def read(app: str | None, directory: str | None) -> Manifest | None:
    """The manifest for FLASK_APP `app` and the migrations directory setting `directory`,
    when it is there, was made for them by this runner here, and every file it was computed
    from is unchanged; else None."""
    try:
        recorded = json.loads(path().read_text(encoding="utf-8"))
        manifest = _parse(recorded)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    inputs = {"format": FORMAT, "runner": runner.__version__, "cwd": os.getcwd(),
              "app": app, "directory": directory}
    if any(recorded.get(key) != expected for key, expected in inputs.items()):
        return None
    return None if _changed(manifest) else manifest


def make(migrations: Migrations, version_table: VersionTable, directory: str | None
         ) -> Manifest:
    """The manifest of a loaded app's migrations: what the app configures (with the version
    table env.py was seen to use), and digests of every file it came from."""
    app, script = migrations.app, migrations.script
    locations = [Path(location) for location in script.version_locations or ()] or [
        Path(script.dir, "versions")]
    recursive = bool(getattr(script, "recursive_version_locations", False))
    listed: dict[str, list[str]] = {}
    for location in locations:
        for folder in (_walk(location) if recursive else [location]):
            listed[str(folder)] = _entries(folder)
    sources = [app.migrations_directory / "env.py", app.migrations_directory / "alembic.ini",
               *(Path(revision.path) for revision in script.walk_revisions()),
               *_dotenv_files(), *app.source_files]
    history = migrations.history
    return Manifest(
        app=app.import_path, directory=directory,
        migrations_directory=str(app.migrations_directory), version_table=version_table,
        binds=tuple(app.bind_urls), heads=tuple(sorted(history.heads)),
        revisions=history.known, instance_path=app.instance_path,
        files={str(source): _digest(source) for source in dict.fromkeys(sources)
               if source.is_file()},
        listings=listed,
    )


def write(manifest: Manifest, where: Path | None = None) -> Path:
    """Write `manifest` (atomically); ConfigError naming the path when it cannot be written."""
    target = where or path()
    partial = target.with_name(target.name + ".partial")
    try:
        partial.write_text(manifest.as_json() + "\n", encoding="utf-8")
        partial.replace(target)
    except OSError as error:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise ConfigError(f"cannot write {target}: {error.strerror}: run 'runner prepare'"
                          " where the working directory is writable (at image build)") from None
    return target


def refresh(manifest: Manifest) -> bool:
    """Rewrite the manifest file if there is one for the same app and directory settings,
    it differs and it can be written (a full start keeps current what `runner prepare`
    made); whether it was rewritten."""
    target = path()
    try:
        current = target.read_text(encoding="utf-8")
        recorded = json.loads(current)
    except (OSError, ValueError):
        return False
    same_inputs = (recorded.get("app"), recorded.get("directory")) == (
        manifest.app, manifest.directory)
    if (not same_inputs or current.strip() == manifest.as_json()
            or not os.access(target.parent, os.W_OK)):
        return False
    try:
        write(manifest, target)
    except ConfigError:
        return False
    return True


def _parse(recorded: dict[str, Any]) -> Manifest:
    return Manifest(
        app=recorded["app"], directory=recorded["directory"],
        migrations_directory=str(recorded["migrations_directory"]),
        version_table=VersionTable(str(recorded["version_table"]),
                                   recorded["version_table_schema"]),
        binds=tuple(recorded["binds"]), heads=tuple(recorded["heads"]),
        revisions=frozenset(recorded["revisions"]),
        instance_path=str(recorded["instance_path"]),
        files={name: (int(size), int(mtime), str(digest))
               for name, (size, mtime, digest) in recorded["files"].items()},
        listings={name: list(entries) for name, entries in recorded["listings"].items()},
    )


def _changed(manifest: Manifest) -> str | None:
    """The first file or directory that is not as the manifest recorded it, or None."""
    for folder, entries in manifest.listings.items():
        if _entries(Path(folder)) != entries:
            return folder
    for name, (size, mtime, digest) in manifest.files.items():
        try:
            stat = os.stat(name)
        except OSError:
            return name
        # As Python's own bytecode cache: size and mtime equal, the content is trusted;
        # otherwise (a copy, a checkout) the content decides.
        if (stat.st_size, stat.st_mtime_ns) != (size, mtime) and _sha256(name) != digest:
            return name
    return None


def _digest(source: Path) -> tuple[int, int, str]:
    stat = source.stat()
    return stat.st_size, stat.st_mtime_ns, _sha256(str(source))


def _sha256(name: str) -> str:
    try:
        with open(name, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return ""


def _entries(folder: Path) -> list[str]:
    """The names in `folder` that Alembic may read revisions from: its files, and its
    folders (recursive_version_locations), not its bytecode cache."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    return sorted(entry.name for entry in entries
                  if entry.name.endswith((".py", ".pyc", ".pyo"))
                  or (entry.is_dir() and entry.name != "__pycache__"))


def _walk(location: Path) -> Iterable[Path]:
    for root, folders, _ in os.walk(location):
        folders[:] = [name for name in folders if name != "__pycache__"]
        yield Path(root)


def _dotenv_files() -> list[Path]:
    """The .flaskenv and .env files `flask` would read, from here up."""
    here = Path.cwd()
    return [directory / name for directory in (here, *here.parents)
            for name in (".flaskenv", ".env") if (directory / name).is_file()]

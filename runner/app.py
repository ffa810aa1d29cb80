"""The Flask app exactly as `flask` loads it (`flask.cli.ScriptInfo`), and what only it knows:
its databases and its migrations directory.

Loading the app is the one moment the runner puts an environment into os.environ (the app
reads its configuration from there): the console entry point has applied it for good
already, and a host app calling the library gets it only for the duration of the load.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import sysconfig
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner import database
from runner.database import error_text
from runner.errors import ConfigError, DatabaseUnavailable
from runner.log import recorded_steps
from runner.settings import APP_URI, SETTINGS_BY_NAME, Settings
from runner.urls import DRIVER_PACKAGES, DatabaseUrl

if TYPE_CHECKING:
    from flask import Flask

@dataclass(frozen=True)
class LoadedApp:
    """The app, loaded, and what the runner learns from it."""

    flask_app: Flask = field(repr=False)
    import_path: str | None
    """FLASK_APP as given; None when flask found wsgi.py or app.py."""
    database_url: DatabaseUrl
    """The app's default database, as its engine connects."""
    bind_urls: Mapping[str, DatabaseUrl]
    migrations_directory: Path
    source_files: tuple[Path, ...] = ()
    """The app's own modules' files, imported while it loaded."""
    migrated_itself: tuple[str, ...] = ()
    """The revisions the app's own start-up applied (a factory calling flask_migrate's
    upgrade), oldest first."""

    @property
    def extension(self) -> Any:
        """Flask-Migrate's state on the app (`app.extensions['migrate']`)."""
        return self.flask_app.extensions["migrate"]

    @property
    def instance_path(self) -> str:
        """Where Flask-SQLAlchemy puts a relative SQLite file."""
        return str(self.flask_app.instance_path)

    def dispose_engines(self) -> None:
        """Close the app's pooled connections (a waiter or a no-op holds none)."""
        with self.flask_app.app_context():
            for engine in self.extension.db.engines.values():
                engine.dispose()


def load_app(settings: Settings) -> LoadedApp:
    """Load the app as `flask` does, with the settings' environment; ConfigError naming what
    to change when it cannot be loaded, has no Flask-Migrate, or uses another database;
    AppNotReady when its factory could not reach its database (or lost a race to create a
    table), which the console entry point tries again with a new process."""
    with environment_applied(settings.app_environment), recorded_steps() as steps:
        before = set(sys.modules)
        flask_app = _load(settings)
        imported = [module for name, module in list(sys.modules.items())
                    if name not in before]
    migrated = (f" (the app migrated the database itself while it loaded: {', '.join(steps)})"
                if steps else "")
    if "migrate" not in flask_app.extensions:
        raise ConfigError(
            f"the app {settings.app or '(wsgi.py or app.py)'} has no Flask-Migrate extension:"
            " call Migrate(app, db) in it, or point --app/FLASK_APP at the app that does"
        )
    database_url, bind_urls = _database_urls(flask_app)
    from runner.log import events

    for url in (database_url, *bind_urls.values()):
        events.add_url_secret(url.render())
    requested = settings.runner_url
    if requested is not None and not requested.in_folder(flask_app.instance_path).same_database(
            database_url):
        raise ConfigError(
            f"the app connects to {database_url.describe()} (its SQLALCHEMY_DATABASE_URI),"
            f" not to {requested.describe()} given by {settings.runner_url_source}:"
            f" make the app read DATABASE_URL, or drop that setting{migrated}"
        )
    directory = Path(settings.directory or flask_app.extensions["migrate"].directory).absolute()
    if not (directory / "env.py").is_file():
        raise ConfigError(
            f"no migrations directory at {str(directory)!r} (no env.py there): set"
            f" {SETTINGS_BY_NAME['directory'].names}, or run 'flask db init'{migrated}"
        )
    return LoadedApp(flask_app=flask_app, import_path=settings.app, database_url=database_url,
                     bind_urls=bind_urls, migrations_directory=directory,
                     source_files=own_source_files(imported), migrated_itself=tuple(steps))


class AppNotReady(DatabaseUnavailable):
    """The app's factory could not reach its database yet (or lost a race to create a
    table): a new attempt, in a new process (a factory may run only once in one), may load
    it."""


def _load(settings: Settings) -> Flask:
    """load_flask_app; a database error raised by the app's own start-up is the database's
    verdict (exit 3), not the app's configuration."""
    with _databases_tried() as tried:
        try:
            return load_flask_app(settings.app)
        except ConfigError as error:
            cause = error.__cause__
            if cause is None or (not database.is_connection_error(cause) and not (
                    database.is_already_exists(cause))):
                raise
    source = settings.runner_url_source if settings.runner_url else APP_URI
    where = f" (it connects to {tried[-1]})" if tried else ""
    elsewhere = (f"; the app may connect elsewhere than {settings.runner_url.describe()}:"
                 " make it read DATABASE_URL" if settings.runner_url else "")
    failed = f"could not load the app {settings.app or '(wsgi.py or app.py)'}{where}: " \
             f"{_error_line(cause)}"
    if database.is_permanent(cause):
        raise DatabaseUnavailable(
            f"{failed}: the database refused the app (fix the credentials or database name in"
            f" {source}{elsewhere})", error=database.error_text(cause)) from None
    first = "" if settings.runner_url else (
        "; or set DATABASE_URL, so that the runner waits for the database before it loads the"
        " app")
    raise AppNotReady(
        f"{failed} (the app's database is not ready: raise --wait-timeout/RUNNER_WAIT_TIMEOUT,"
        f" or check the host and port in {source}{elsewhere}{first})",
        error=database.error_text(cause)) from None


@contextlib.contextmanager
def _databases_tried() -> Iterator[list[str]]:
    """The databases the app's engines try to connect to inside the block, described
    without a password, as the drivers get them (SQLAlchemy's do_connect)."""
    import sqlalchemy as sa
    from sqlalchemy.engine import Engine

    tried: list[str] = []

    def note(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        if dialect.name == "sqlite":
            tried.append(f"sqlite:///{cargs[0] if cargs else cparams.get('database', '')}")
            return
        host = cparams.get("host") or cparams.get("unix_socket") or ""
        port = f":{cparams['port']}" if cparams.get("port") else ""
        name = cparams.get("dbname") or cparams.get("database") or cparams.get("db") or ""
        user = cparams.get("user") or cparams.get("username")
        tried.append(f"{dialect.name}://{f'{user}@' if user else ''}{host}{port}/{name}")

    sa.event.listen(Engine, "do_connect", note)
    try:
        yield tried
    finally:
        sa.event.remove(Engine, "do_connect", note)


def load_flask_app(import_path: str | None) -> Flask:
    """The app `flask --app IMPORT_PATH` serves (flask.cli.ScriptInfo.load_app, which also
    honours FLASK_DEBUG); ConfigError with the app's real error and a hint."""
    from flask.cli import ScriptInfo

    try:
        return ScriptInfo(app_import_path=import_path).load_app()
    except SystemExit as exc:  # flask_migrate.upgrade() in a factory exits on its errors
        cause = f": {_error_line(exc.__context__)}" if exc.__context__ else ""
        raise ConfigError(f"the app {import_path or '(wsgi.py or app.py)'} exited while it"
                          f" loaded (sys.exit({exc.code})){cause} (fix the app that"
                          " --app/FLASK_APP names)") from exc.__context__
    except Exception as exc:
        raise ConfigError(load_failure(import_path, exc)) from exc


def load_failure(import_path: str | None, error: BaseException) -> str:
    """One line for an app that failed to load: its real error and what to do about it."""
    from flask.cli import NoAppException

    named = repr(import_path) if import_path else "(wsgi.py or app.py)"
    where = f"working directory {os.getcwd()!r}"
    if isinstance(error, NoAppException) and isinstance(error.__context__, ImportError):
        # flask wraps the ImportError raised while importing the module in a traceback text.
        error = error.__context__
    if isinstance(error, NoAppException):
        return (f"could not load the app {named}: {_first_line(str(error))}: set --app or"
                f" FLASK_APP ({where})")
    what = f"could not load the app {named}: {_error_line(error)}"
    missing = _missing_module(error)
    if missing is None:
        return f"{what} (fix the app that --app/FLASK_APP names)"
    name = missing.name or ""
    module = _module_name(import_path)
    if module is not None and (module == name or module.startswith(name + ".")):
        return (f"{what}: set --app or FLASK_APP to the app's module, or start in its"
                f" directory ({where})")
    top = name.split(".")[0]
    if top in DRIVER_PACKAGES and top not in ("pkg_resources",):
        return (f"{what}: the database driver is not installed: pip install"
                f" {DRIVER_PACKAGES[top]} in the app's environment, or name an installed"
                " driver in the URL (e.g. postgresql+psycopg://, mysql+pymysql://)")
    package = DRIVER_PACKAGES.get(top, top)
    return (f"{what}: install it in the app's environment (pip install {package}), or check"
            f" --app/FLASK_APP ({where})")


def own_source_files(modules: list[Any]) -> tuple[Path, ...]:
    """The files of `modules` that are the app's own: not the standard library's, not an
    installed distribution's, not the runner's."""
    library = {Path(sysconfig.get_paths()[key]).resolve()
               for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    library.add(Path(__file__).resolve().parent)
    files = []
    for module in modules:
        path = getattr(module, "__file__", None)
        if not path or not path.endswith(".py"):
            continue
        resolved = Path(path).resolve()
        if not any(resolved.is_relative_to(root) for root in library):
            files.append(resolved)
    return tuple(sorted(set(files)))


@contextlib.contextmanager
def environment_applied(environment: Mapping[str, str]) -> Iterator[None]:
    """os.environ is exactly `environment` inside the block, and as it was after it (nothing
    changes where the console entry point applied it already)."""
    if dict(os.environ) == dict(environment):
        yield
        return
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environment)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _database_urls(flask_app: Flask) -> tuple[DatabaseUrl, dict[str, DatabaseUrl]]:
    """The URLs of the app's default database and of each bind, as its engines see them."""
    db = flask_app.extensions["migrate"].db
    with flask_app.app_context():
        engines = dict(db.engines)
    if None not in engines:
        raise ConfigError("the app has no default database: set SQLALCHEMY_DATABASE_URI or"
                          f" {SETTINGS_BY_NAME['database_url'].names}")
    default = engines.pop(None)
    return (DatabaseUrl.from_sqlalchemy(default.url),
            {str(key): DatabaseUrl.from_sqlalchemy(engine.url) for key, engine in engines.items()})


def _module_name(import_path: str | None) -> str | None:
    """The module FLASK_APP names, as flask.cli.prepare_import names it (as ScriptInfo did
    already: calling it again leaves sys.path as it is)."""
    if not import_path:
        return None
    from flask.cli import prepare_import

    return prepare_import(re.split(r":(?![\\/])", import_path, maxsplit=1)[0])


def _missing_module(error: BaseException) -> ModuleNotFoundError | None:
    """The ModuleNotFoundError behind `error` (flask wraps one raised inside the app's module)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ModuleNotFoundError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _error_line(error: BaseException) -> str:
    """`Type: first meaningful line`; for a database error, the driver's own error."""
    original = getattr(error, "orig", None) or error
    text = error_text(error) if original is not error else _first_line(str(error))
    return f"{type(original).__name__}: {text}" if text else type(original).__name__


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


"""One table of settings; resolved from flags, the environment, .flaskenv/.env, the app."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.errors import ConfigError
from runner.log import emit, events

if TYPE_CHECKING:
    # Imported where used: the fast no-op path reads the settings without Flask or SQLAlchemy.
    from flask import Flask
    from sqlalchemy.engine import URL

DEFAULT_WAIT_TIMEOUT = 60.0
DEFAULT_LOCK_TIMEOUT = 300.0
DEFAULT_DDL_LOCK_TIMEOUT = 5.0
DEFAULT_STOP_TIMEOUT = 20.0
DEFAULT_PORT = "8000"
LOG_FORMATS = ("text", "json")


def _text(value: Any, source: str) -> str:
    return str(value)


def _seconds(value: Any, source: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{source} must be a number of seconds, got {value!r}") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise ConfigError(f"{source} must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def _log_format(value: Any, source: str) -> str:
    if value not in LOG_FORMATS:
        raise ConfigError(f"{source} must be 'text' or 'json', got {value!r}")
    return str(value)


def _boolean(value: Any, source: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{source} must be true or false, got {value!r}")


def _url(value: Any, source: str) -> URL:
    """Parse a URL; its password is masked in every event from now on."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    text = str(value)
    events.add_url_secret(text)
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        # The text may hold a password: name its scheme only.
        scheme = text.split("://", 1)[0] if "://" in text else "(none)"
        raise ConfigError(
            f"{source} is not a database URL (scheme {scheme!r}): expected"
            " dialect+driver://user:password@host:port/database"
        ) from None
    events.add_url_secret(url.render_as_string(hide_password=False))
    return url


@dataclass(frozen=True)
class Setting:
    """One option, as gunicorn declares its settings: flag, variable, default, validator, help."""

    name: str
    """The key in the flags mapping and the attribute of Options."""
    flag: str
    variable: str
    default: Any
    validate: Callable[[Any, str], Any]
    """Turns the flag's or variable's text into the value; ConfigError naming `source`."""
    help: str
    default_text: str
    """The default as --help and the README state it."""
    file_variable: str | None = None
    """A variable naming a file that holds the value (Docker and Kubernetes secrets)."""
    switch: bool = False
    """A flag without a value: given means true."""

    @property
    def names(self) -> str:
        """How error hints name the setting: `--flag/VARIABLE`."""
        return f"{self.flag}/{self.variable}"


SETTINGS = (
    Setting("app", "--app", "FLASK_APP", None, _text,
            "the Flask app, in any form 'flask --app' takes: module, module:app,"
            " module:create_app, 'module:create_app(args)', path/to/app.py; also read from"
            " .flaskenv/.env",
            "as flask finds it: wsgi.py or app.py"),
    Setting("database_url", "--database-url", "DATABASE_URL", None, _url,
            "the database URL; postgres://, postgresql://, mysql:// and mariadb:// get an"
            " installed driver, and the app receives that URL as DATABASE_URL",
            "the app's SQLALCHEMY_DATABASE_URI", file_variable="DATABASE_URL_FILE"),
    Setting("migration_database_url", "--migration-database-url", "MIGRATION_DATABASE_URL",
            None, _url,
            "a direct connection (not through a transaction-pooling proxy such as PgBouncer)"
            " for the lock and the migrations; the app served keeps DATABASE_URL",
            "the database URL", file_variable="MIGRATION_DATABASE_URL_FILE"),
    Setting("directory", "--directory", "RUNNER_MIGRATIONS_DIR", None, _text,
            "the migrations directory", "the directory the app's Migrate uses"),
    Setting("wait_timeout", "--wait-timeout", "RUNNER_WAIT_TIMEOUT", DEFAULT_WAIT_TIMEOUT,
            _seconds, "seconds to wait for the database", "60"),
    Setting("lock_timeout", "--lock-timeout", "RUNNER_LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT,
            _seconds, "seconds to wait for the migration lock, and for retrying statements"
            " that timed out on table locks", "300"),
    Setting("ddl_lock_timeout", "--ddl-lock-timeout", "RUNNER_DDL_LOCK_TIMEOUT",
            DEFAULT_DDL_LOCK_TIMEOUT, _seconds,
            "seconds one migration statement may wait for a table lock before the upgrade is"
            " rolled back and retried; 0: no limit", "5"),
    Setting("stop_timeout", "--stop-timeout", "RUNNER_STOP_TIMEOUT", DEFAULT_STOP_TIMEOUT,
            _seconds,
            "MySQL/MariaDB: seconds the revision in progress may run on after SIGTERM/SIGINT"
            " before its statement is killed", "20"),
    Setting("log_format", "--log-format", "RUNNER_LOG_FORMAT", "text", _log_format,
            "text, or json: one JSON object a line", "text"),
    Setting("allow_newer_database", "--allow-newer-database", "RUNNER_ALLOW_NEWER_DATABASE",
            False, _boolean,
            "take a database revision these scripts lack as newer: do not migrate, serve",
            "false", switch=True),
)
"""Every setting; argparse, --help and the error hints are made from this table."""

SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}


@dataclass(frozen=True)
class Options:
    """The settings as asked for, before the app is loaded: flags > environment > .flaskenv/.env."""

    app: str | None
    database_url: URL | None
    """The URL the operator gave (flag, DATABASE_URL or DATABASE_URL_FILE), normalized."""
    migration_database_url: URL | None
    """The direct URL for the lock and the migrations, normalized; None: database_url."""
    directory: str | None
    wait_timeout: float
    lock_timeout: float
    ddl_lock_timeout: float
    stop_timeout: float
    log_format: str
    allow_newer_database: bool
    gunicorn_args: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict, repr=False)
    """The environment for the app and gunicorn: the process's, plus .flaskenv/.env, plus the
    normalized DATABASE_URL."""
    runner_environment: Mapping[str, str] = field(default_factory=dict, repr=False)
    """The environment the runner loads the app with: `environment`, with DATABASE_URL the
    migration URL when one is given, so that env.py migrates over the direct connection."""

    @property
    def runner_url(self) -> URL | None:
        """The URL the runner itself connects to (wait, lock, migrations), if known."""
        return self.migration_database_url or self.database_url

    @property
    def runner_url_setting(self) -> Setting:
        """The setting that names runner_url, for error hints."""
        return SETTINGS_BY_NAME["migration_database_url" if self.migration_database_url
                                else "database_url"]


@dataclass(frozen=True)
class Settings:
    """Everything a command needs, resolved once: CLI > environment > app config > defaults."""

    app_path: str
    app: Flask = field(repr=False)
    database_url: URL
    bind_urls: Mapping[str, URL]
    migrations_directory: Path
    wait_timeout: float
    lock_timeout: float
    ddl_lock_timeout: float
    log_format: str
    stop_timeout: float = DEFAULT_STOP_TIMEOUT
    allow_newer_database: bool = False
    gunicorn_args: tuple[str, ...] = ()
    exec_environment: Mapping[str, str] = field(default_factory=dict, repr=False)
    gunicorn_app: str = ""
    """The `module:expression` gunicorn serves: the same app as `flask` loads."""

    @property
    def database_urls(self) -> tuple[URL, ...]:
        """The default database's URL, then every bind's."""
        return (self.database_url, *self.bind_urls.values())


def describe_url(url: URL) -> str:
    """The URL as text with its password hidden, for logs and errors."""
    return url.render_as_string(hide_password=True)


def read_log_format(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> str:
    """The log format from --log-format or RUNNER_LOG_FORMAT; needed before anything logs."""
    value, source = _pick(SETTINGS_BY_NAME["log_format"], flags,
                          os.environ if environ is None else environ)
    return "text" if value is None else _log_format(value, source)


_URL_SETTINGS = ("database_url", "migration_database_url")


def resolve_options(
    flags: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> Options:
    """Resolve every setting without loading the app or changing the process.

    `environ` is the process environment by default; it is read, never written: what the app
    and gunicorn must see is returned in Options.environment.
    """
    env = with_dotenv(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    given: dict[str, Any] = {}
    for setting in SETTINGS:
        value, source = _pick(setting, flags, env)
        given[setting.name] = value
        values[setting.name] = setting.default if value is None else setting.validate(
            value, source)
    from runner.urls import normalize_url

    exported: dict[str, str] = {}
    for name in _URL_SETTINGS:
        requested: URL | None = values[name]
        if requested is not None:
            normalized = _known_dialect(normalize_url(requested), SETTINGS_BY_NAME[name])
            # The app reads DATABASE_URL when it is created, and so do gunicorn's workers:
            # they get the URL asked for, with the driver it needs, as written if it has one.
            exported[name] = (str(given[name]) if normalized == requested
                              else normalized.render_as_string(hide_password=False))
            values[name] = normalized
    if "database_url" in exported:
        env["DATABASE_URL"] = exported["database_url"]
    runner_environment = dict(env)
    if "migration_database_url" in exported:
        runner_environment["DATABASE_URL"] = exported["migration_database_url"]
    return Options(**values, gunicorn_args=tuple(flags.get("gunicorn_args") or ()),
                   environment=env, runner_environment=runner_environment)


@dataclass(frozen=True)
class PlainOptions:
    """What the fast no-op path needs, read without Flask, SQLAlchemy or the app."""

    database_url: str
    """The URL the runner connects to, as the operator wrote it: the migration URL if given,
    else the database URL (flag, variable or its file)."""
    directory: Path
    app: str | None
    wait_timeout: float
    lock_timeout: float
    log_format: str


def plain_options(
    flags: Mapping[str, Any], names: Iterable[str], environ: Mapping[str, str] | None = None
) -> PlainOptions | None:
    """The settings `names` from flags and the environment, each validated as resolve_options
    validates it (the URL is left as text); None when only the app can tell the URL or the
    migrations directory, or when .flaskenv/.env cannot be read as `flask` reads them."""
    env = _with_plain_dotenv(os.environ if environ is None else environ)
    if env is None:
        return None
    values: dict[str, Any] = {}
    for name in names:
        setting = SETTINGS_BY_NAME[name]
        value, source = _pick(setting, flags, env)
        if value is not None and name not in _URL_SETTINGS:
            value = setting.validate(value, source)
        values[name] = setting.default if value is None else value
    # The runner's own URL: the direct one, when the app's goes through a pooler.
    url = values.get("migration_database_url") or values.get("database_url")
    if url is None or values.get("directory") is None:
        return None
    return PlainOptions(database_url=str(url),
                        directory=Path(values["directory"]).absolute(), app=values.get("app"),
                        wait_timeout=values.get("wait_timeout", DEFAULT_WAIT_TIMEOUT),
                        lock_timeout=values.get("lock_timeout", DEFAULT_LOCK_TIMEOUT),
                        log_format=values.get("log_format", SETTINGS_BY_NAME["log_format"].default))


def _with_plain_dotenv(environ: Mapping[str, str]) -> Mapping[str, str] | None:
    """`environ` plus .flaskenv/.env as `with_dotenv` loads them, read with python-dotenv
    alone (the fast start imports no Flask); None where that might differ from `flask`:
    python-dotenv is not installed, or a value refers to another variable ($), which
    python-dotenv expands one way here and another way in flask.cli.load_dotenv."""
    here = Path.cwd()
    # python-dotenv's find_dotenv looks in the working directory and every parent.
    if not any((directory / name).is_file() for directory in (here, *here.parents)
               for name in (".flaskenv", ".env")):
        return environ
    skip = environ.get("FLASK_SKIP_DOTENV")  # as flask.helpers.get_load_dotenv reads it
    if skip and skip.lower() not in ("0", "false", "no"):
        return environ
    try:
        import dotenv
    except ImportError:
        return None  # the full path warns that the files are ignored
    loaded: dict[str, str | None] = {}
    for name in (".flaskenv", ".env"):  # .env wins over .flaskenv, as in flask
        found = dotenv.find_dotenv(name, usecwd=True)
        if found:
            loaded.update(dotenv.dotenv_values(found, encoding="utf-8", interpolate=False))
    if any(value and "$" in value for value in loaded.values()):
        return None
    # A variable set in the environment wins over the files, as in flask.
    return {**{key: value for key, value in loaded.items() if value is not None}, **environ}


def load_settings(
    flags: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> Settings:
    """Resolve the settings and load the app; raises ConfigError naming what to change.

    The app is loaded with Options.environment applied to os.environ, and os.environ is put
    back as it was afterwards (the console entry point applies it for good).
    """
    return settings_for(resolve_options(flags, environ))


def settings_for(options: Options) -> Settings:
    """Load the app as `flask` does, with the options' environment; the Settings of a command."""
    from runner import discovery  # Flask's app loading: only when an app is loaded

    with environment_applied(options.runner_environment):
        located = discovery.locate(options.app)
    app = located.app
    if "migrate" not in app.extensions:
        raise ConfigError(
            f"the app {located.import_path!r} has no Flask-Migrate extension: call"
            " Migrate(app, db) in it, or point --app/FLASK_APP at the app that does"
        )
    database_url, bind_urls = _app_database_urls(app)
    for url in (database_url, *bind_urls.values()):
        events.add_url_secret(url.render_as_string(hide_password=False))
    if options.runner_url is not None:
        _require_same_database(options.runner_url, database_url, options.runner_url_setting)
    # Absolute, so that nothing depends on the working directory from here on.
    migrations_directory = Path(
        options.directory or app.extensions["migrate"].directory).absolute()
    if not (migrations_directory / "env.py").is_file():
        raise ConfigError(
            f"no migrations directory at {str(migrations_directory)!r} (no env.py there):"
            f" set {SETTINGS_BY_NAME['directory'].names}, or run 'flask db init'"
        )
    exec_environment = dict(options.environment)
    exec_environment.setdefault("PORT", DEFAULT_PORT)
    exec_environment["FLASK_APP"] = located.import_path
    if located.search_path != os.getcwd():
        # gunicorn imports from its working directory; flask also from the app's directory.
        exec_environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, (located.search_path, exec_environment.get("PYTHONPATH"))))
    return Settings(
        app_path=located.import_path,
        app=app,
        database_url=database_url,
        bind_urls=bind_urls,
        migrations_directory=migrations_directory,
        wait_timeout=options.wait_timeout,
        lock_timeout=options.lock_timeout,
        ddl_lock_timeout=options.ddl_lock_timeout,
        log_format=options.log_format,
        stop_timeout=options.stop_timeout,
        allow_newer_database=options.allow_newer_database,
        gunicorn_args=options.gunicorn_args,
        exec_environment=exec_environment,
        gunicorn_app=located.gunicorn_spec,
    )


def with_dotenv(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` plus what `flask` loads from .flaskenv/.env, which never overrides a variable.

    flask.cli.load_dotenv writes os.environ: it runs against `environ` applied there, and
    os.environ is put back afterwards.
    """
    if importlib.util.find_spec("dotenv") is None:
        present = [name for name in (".flaskenv", ".env") if Path(name).is_file()]
        if present:
            emit("config.dotenv_ignored", f"{' and '.join(present)} ignored: python-dotenv is"
                 " not installed (pip install python-dotenv, as `flask` needs too)",
                 level="warning")
        return dict(environ)
    from flask.cli import load_dotenv
    from flask.helpers import get_load_dotenv

    with environment_applied(environ):
        if get_load_dotenv():
            load_dotenv()
        return dict(os.environ)


@contextlib.contextmanager
def environment_applied(environment: Mapping[str, str]) -> Iterator[None]:
    """os.environ is exactly `environment` inside the block, and as it was after it."""
    saved = dict(os.environ)
    apply_environment(environment)
    try:
        yield
    finally:
        apply_environment(saved)


def apply_environment(environment: Mapping[str, str]) -> None:
    """Make os.environ exactly `environment` (only the console entry point keeps it so)."""
    if dict(os.environ) == dict(environment):
        return
    os.environ.clear()
    os.environ.update(environment)


def _pick(
    setting: Setting, flags: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[Any, str]:
    """The raw value of a setting and where it came from: the flag, the variable or its file."""
    if flags.get(setting.name) is not None:
        return flags[setting.name], setting.flag
    secret_file = environ.get(setting.file_variable) if setting.file_variable else None
    if environ.get(setting.variable):
        if secret_file:
            # As the official database images do: two sources for one secret is a mistake.
            raise ConfigError(f"both {setting.variable} and {setting.file_variable} are set:"
                              " unset one")
        return environ[setting.variable], setting.variable
    if secret_file:
        return _read_secret(secret_file, f"{setting.file_variable}={secret_file!r}"), \
            str(setting.file_variable)
    return None, setting.variable


def _read_secret(path: str, source: str) -> str:
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{source} cannot be read ({exc.strerror}): mount the secret there"
                          " or fix the variable") from None
    if not value:
        raise ConfigError(f"{source} is empty: put the value in it")
    return value


def _known_dialect(url: URL, setting: Setting) -> URL:
    """`url` if SQLAlchemy has its dialect and driver; else a ConfigError without the password."""
    from sqlalchemy.exc import NoSuchModuleError

    try:
        url.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(
            f"{setting.names} names an unknown dialect or driver"
            f" {url.drivername!r}: use e.g. postgresql://, postgresql+psycopg://,"
            " mysql+pymysql:// or sqlite:///"
        ) from None
    return url


def _app_database_urls(app: Flask) -> tuple[URL, dict[str, URL]]:
    """The URLs of the app's default database and of each bind, as its engines see them."""
    db = app.extensions["migrate"].db
    with app.app_context():
        engines = dict(db.engines)
    if None not in engines:
        raise ConfigError("the app has no default database: set SQLALCHEMY_DATABASE_URI or"
                          f" {SETTINGS_BY_NAME['database_url'].names}")
    default = engines.pop(None)
    return default.url, {str(key): engine.url for key, engine in engines.items()}


def _require_same_database(requested: URL, used: URL, setting: Setting) -> None:
    """Refuse to lock one database while the app's migrations would run on another."""
    def identity(url: URL) -> tuple[Any, ...]:
        return (url.get_backend_name(), url.host, url.port, url.database, url.username)

    if identity(requested) != identity(used):
        raise ConfigError(
            f"the app connects to {describe_url(used)}, not to the requested"
            f" {describe_url(requested)}: make the app read DATABASE_URL, or drop"
            f" {setting.names}/{setting.file_variable}"
        )

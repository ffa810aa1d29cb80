"""One frozen Settings object, from flags, then the environment, then the app's config."""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask
from flask.cli import ScriptInfo
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from runner.errors import ConfigError
from runner.log import events

DEFAULT_WAIT_TIMEOUT = 60.0
DEFAULT_LOCK_TIMEOUT = 300.0
DEFAULT_PORT = "8000"
LOG_FORMATS = ("text", "json")


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
    log_format: str
    allow_newer_database: bool = False
    gunicorn_args: tuple[str, ...] = ()
    exec_environment: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def database_urls(self) -> tuple[URL, ...]:
        """The default database's URL, then every bind's."""
        return (self.database_url, *self.bind_urls.values())


def describe_url(url: URL) -> str:
    """The URL as text with its password hidden, for logs and errors."""
    return url.render_as_string(hide_password=True)


def read_log_format(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> str:
    """The log format from --log-format or RUNNER_LOG_FORMAT; needed before anything logs."""
    env = os.environ if environ is None else environ
    value, source = _pick(flags, "log_format", "--log-format", env, "RUNNER_LOG_FORMAT")
    if value is None:
        return "text"
    if value not in LOG_FORMATS:
        raise ConfigError(f"{source} must be 'text' or 'json', got {value!r}")
    return str(value)


def load_settings(
    flags: Mapping[str, Any],
    environ: MutableMapping[str, str] | None = None,
) -> Settings:
    """Resolve the settings and load the app; raises ConfigError naming what to change.

    `environ` is the process environment by default; the app reads that one too, which is
    how a URL given by flag or DATABASE_URL_FILE reaches it.
    """
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    wait_timeout = _seconds(flags, "wait_timeout", "--wait-timeout", env, "RUNNER_WAIT_TIMEOUT",
                            DEFAULT_WAIT_TIMEOUT)
    lock_timeout = _seconds(flags, "lock_timeout", "--lock-timeout", env, "RUNNER_LOCK_TIMEOUT",
                            DEFAULT_LOCK_TIMEOUT)
    log_format = read_log_format(flags, env)
    allow_newer_database = _boolean(flags, "allow_newer_database", "--allow-newer-database",
                                    env, "RUNNER_ALLOW_NEWER_DATABASE")
    app_path, _ = _pick(flags, "app", "--app", env, "FLASK_APP")
    if not app_path:
        raise ConfigError("no app given: set --app or FLASK_APP to 'module:create_app()'")
    requested_url = _requested_database_url(flags, env)
    requested = None
    if requested_url is not None:
        requested = _parse_url(requested_url, "--database-url/DATABASE_URL")
        # The app reads DATABASE_URL when it is created, and so do gunicorn's workers
        # after the exec: export what the operator asked for so all of them agree.
        env["DATABASE_URL"] = requested_url
    app = load_app(app_path)
    database_url, bind_urls = _app_database_urls(app)
    for url in (database_url, *bind_urls.values()):
        events.add_secret(url.password and str(url.password))
    if requested is not None:
        _require_same_database(requested, database_url)
    directory, _ = _pick(flags, "directory", "--directory", env, "RUNNER_MIGRATIONS_DIR")
    # Absolute, so that nothing depends on the working directory from here on.
    migrations_directory = Path(directory or app.extensions["migrate"].directory).absolute()
    if not (migrations_directory / "env.py").is_file():
        raise ConfigError(
            f"no migrations directory at {str(migrations_directory)!r} (no env.py there):"
            " set --directory or RUNNER_MIGRATIONS_DIR, or run 'flask db init'"
        )
    exec_environment = dict(env)
    exec_environment.setdefault("PORT", DEFAULT_PORT)
    exec_environment["FLASK_APP"] = app_path
    return Settings(
        app_path=app_path,
        app=app,
        database_url=database_url,
        bind_urls=bind_urls,
        migrations_directory=migrations_directory,
        wait_timeout=wait_timeout,
        lock_timeout=lock_timeout,
        log_format=log_format,
        allow_newer_database=allow_newer_database,
        gunicorn_args=tuple(flags.get("gunicorn_args") or ()),
        exec_environment=exec_environment,
    )


def load_app(app_path: str) -> Flask:
    """Load the Flask app the way `flask` does; any failure is a ConfigError."""
    try:
        app = ScriptInfo(app_import_path=app_path, set_debug_flag=False).load_app()
    except Exception as exc:
        raise ConfigError(
            f"could not load the app {app_path!r} (set --app or FLASK_APP): {_last_line(exc)}"
        ) from exc
    if "migrate" not in app.extensions:
        raise ConfigError(
            f"the app {app_path!r} has no Flask-Migrate extension: call Migrate(app, db)"
            " in it, or point --app/FLASK_APP at the app that does"
        )
    return app


def _pick(
    flags: Mapping[str, Any], key: str, flag: str, environ: Mapping[str, str], variable: str
) -> tuple[Any, str]:
    """The value of a setting and where it came from (the flag or the variable)."""
    if flags.get(key) is not None:
        return flags[key], flag
    if environ.get(variable):
        return environ[variable], variable
    return None, variable


def _seconds(
    flags: Mapping[str, Any],
    key: str,
    flag: str,
    environ: Mapping[str, str],
    variable: str,
    default: float,
) -> float:
    value, source = _pick(flags, key, flag, environ, variable)
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{source} must be a number of seconds, got {value!r}") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise ConfigError(f"{source} must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def _boolean(
    flags: Mapping[str, Any], key: str, flag: str, environ: Mapping[str, str], variable: str
) -> bool:
    value, source = _pick(flags, key, flag, environ, variable)
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{source} must be true or false, got {value!r}")


def _requested_database_url(flags: Mapping[str, Any], environ: Mapping[str, str]) -> str | None:
    """The URL from --database-url, DATABASE_URL or DATABASE_URL_FILE, or None for the app's."""
    if flags.get("database_url"):
        return str(flags["database_url"])
    secret_file = environ.get("DATABASE_URL_FILE")
    if environ.get("DATABASE_URL"):
        if secret_file:
            # As the official database images do: two sources for one secret is a mistake.
            raise ConfigError("both DATABASE_URL and DATABASE_URL_FILE are set: unset one")
        return environ["DATABASE_URL"]
    if secret_file:
        try:
            url = Path(secret_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"DATABASE_URL_FILE={secret_file!r} cannot be read ({exc.strerror}):"
                " mount the secret there or fix DATABASE_URL_FILE"
            ) from None
        if not url:
            raise ConfigError(f"DATABASE_URL_FILE={secret_file!r} is empty: put the URL in it")
        return url
    return None


def _parse_url(text: str, source: str) -> URL:
    """Parse a URL and check SQLAlchemy knows its dialect; its password is masked from now on."""
    try:
        url = make_url(text)
    except ArgumentError:
        # The text may hold a password: name its scheme only.
        scheme = text.split("://", 1)[0] if "://" in text else "(none)"
        raise ConfigError(
            f"{source} is not a database URL (scheme {scheme!r}): expected"
            " dialect+driver://user:password@host:port/database"
        ) from None
    events.add_secret(url.password and str(url.password))
    try:
        url.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(
            f"{source} names an unknown dialect or driver {url.drivername!r}: use e.g."
            " postgresql+psycopg://, mysql+pymysql:// or sqlite:///"
        ) from None
    return url


def _app_database_urls(app: Flask) -> tuple[URL, dict[str, URL]]:
    """The URLs of the app's default database and of each bind, as its engines see them."""
    db = app.extensions["migrate"].db
    with app.app_context():
        engines = dict(db.engines)
    if None not in engines:
        raise ConfigError("the app has no default database: set SQLALCHEMY_DATABASE_URI or "
                          "--database-url/DATABASE_URL")
    default = engines.pop(None)
    return default.url, {str(key): engine.url for key, engine in engines.items()}


def _require_same_database(requested: URL, used: URL) -> None:
    """Refuse to lock one database while the app's migrations would run on another."""
    def identity(url: URL) -> tuple[Any, ...]:
        return (url.get_backend_name(), url.host, url.port, url.database, url.username)

    if identity(requested) != identity(used):
        raise ConfigError(
            f"the app connects to {describe_url(used)}, not to the requested"
            f" {describe_url(requested)}: make the app read DATABASE_URL, or drop"
            " --database-url/DATABASE_URL/DATABASE_URL_FILE"
        )


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

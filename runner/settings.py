"""One table of settings, resolved from flags, the environment and .flaskenv/.env.

Resolving reads the process environment and never writes it: what the app and gunicorn
must see comes back in `Settings.environment`, for the caller to pass on. Nothing here
imports Flask or SQLAlchemy: a replica at head decides without them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.errors import ConfigError
from runner.log import emit, events
from runner.urls import DatabaseUrl, installed, normalize_url, parse_url

DEFAULT_PORT = "8000"
LOG_FORMATS = ("text", "json")
LINT_MODES = ("warn", "block", "off")
SUPPORTED_BACKENDS = ("postgresql", "mysql", "mariadb", "sqlite")


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


def _count(value: Any, source: str) -> int:
    try:
        count = int(str(value))
    except ValueError:
        raise ConfigError(f"{source} must be a whole number, got {value!r}") from None
    if count < 0:
        raise ConfigError(f"{source} must be a whole number >= 0, got {value!r}")
    return count


def _choice(choices: tuple[str, ...]) -> Callable[[Any, str], str]:
    def validate(value: Any, source: str) -> str:
        if value not in choices:
            raise ConfigError(f"{source} must be {' or '.join(repr(c) for c in choices)},"
                              f" got {value!r}")
        return str(value)

    return validate


def _names(value: Any, source: str) -> frozenset[str]:
    return frozenset(name.strip() for name in str(value).split(",") if name.strip())


def _boolean(value: Any, source: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{source} must be true or false, got {value!r}")


def _url(value: Any, source: str) -> DatabaseUrl:
    """Parse a URL; its password is masked in every event from now on."""
    text = str(value)
    events.add_url_secret(text)
    url = parse_url(text, source)
    if url.backend not in SUPPORTED_BACKENDS:
        raise ConfigError(f"{source} names the {url.backend!r} dialect, which has no migration"
                          " lock here: use postgresql://, mysql://, mariadb:// or sqlite:///")
    return url


@dataclass(frozen=True)
class Setting:
    """One option, as gunicorn declares its settings: flag, variable, default, validator, help."""

    name: str
    """The key in the flags mapping and the attribute of Settings."""
    flag: str | None
    """None: a variable only (no command takes it on its command line)."""
    variable: str
    default: Any
    validate: Callable[[Any, str], Any]
    """Turns the flag's or variable's text into the value; ConfigError naming `source`."""
    help: str
    default_text: str
    """The default as --help and the docs state it."""
    file_variable: str | None = None
    """A variable naming a file that holds the value (Docker and Kubernetes secrets)."""
    switch: bool = False
    """A flag without a value: given means true."""

    @property
    def names(self) -> str:
        """How error hints name the setting: `--flag/VARIABLE`."""
        return f"{self.flag}/{self.variable}" if self.flag else self.variable


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
            "another URL for the lock and the migrations (a direct connection, say); the app"
            " served keeps DATABASE_URL",
            "the database URL", file_variable="MIGRATION_DATABASE_URL_FILE"),
    Setting("directory", "--directory", "RUNNER_MIGRATIONS_DIR", None, _text,
            "the migrations directory", "the directory the app's Migrate uses"),
    Setting("wait_timeout", "--wait-timeout", "RUNNER_WAIT_TIMEOUT", 60.0, _seconds,
            "seconds to wait for the database, counted from the start", "60"),
    Setting("lock_timeout", "--lock-timeout", "RUNNER_LOCK_TIMEOUT", 300.0, _seconds,
            "seconds to wait for the migration lock, and for retrying statements that timed"
            " out on table locks, counted from the start", "300"),
    Setting("ddl_lock_timeout", "--ddl-lock-timeout", "RUNNER_DDL_LOCK_TIMEOUT", 5.0,
            _seconds,
            "seconds one migration statement may wait for a table lock before the upgrade is"
            " rolled back and retried; 0: no limit", "5"),
    Setting("stop_timeout", "--stop-timeout", "RUNNER_STOP_TIMEOUT", 20.0, _seconds,
            "MySQL/MariaDB: seconds the revision in progress may run on after SIGTERM/SIGINT"
            " before its statement is killed", "20"),
    Setting("log_format", "--log-format", "RUNNER_LOG_FORMAT", "text", _choice(LOG_FORMATS),
            "text, or json: one JSON object a line", "text"),
    Setting("allow_newer_database", "--allow-newer-database", "RUNNER_ALLOW_NEWER_DATABASE",
            False, _boolean,
            "take a database revision these scripts lack as newer: do not migrate, serve",
            "false", switch=True),
    Setting("lint", "--lint", "RUNNER_LINT", "warn", _choice(LINT_MODES),
            "judge the pending revisions before upgrading: warn (log each finding), block"
            " (refuse an error-level finding, exit 8) or off", "warn"),
    Setting("lint_allow", None, "RUNNER_LINT_ALLOW", frozenset(), _names,
            "rule ids accepted for the whole project, comma-separated", "none"),
    Setting("lint_large_table_rows", None, "RUNNER_LINT_LARGE_TABLE_ROWS", 10000, _count,
            "from this row estimate (or unknown) a lock/rewrite/copy finding is an error",
            "10000"),
    Setting("progress_interval", None, "RUNNER_PROGRESS_INTERVAL", 10.0, _seconds,
            "seconds between migrate.progress events during an upgrade; 0: none", "10"),
)
"""Every setting; argparse, --help, the docs and the error hints are made from this table."""

SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}

APP_URI = "the app's SQLALCHEMY_DATABASE_URI"
"""Where the URL comes from when no flag or variable gives it, for hints."""

STARTED_AT = "RUNNER_STARTED_AT"
ATTEMPT = "RUNNER_ATTEMPT"
"""Set by the runner for the process it starts anew to load an app whose database was not
ready (runner.cli): when the command first started (time.time()), and which attempt this
is. Neither reaches the app."""


@dataclass(frozen=True)
class Settings:
    """Everything a command is told, resolved once at its start; the app is not loaded."""

    app: str | None
    database_url: DatabaseUrl | None
    """The URL the operator gave (flag, DATABASE_URL or DATABASE_URL_FILE), normalized."""
    migration_database_url: DatabaseUrl | None
    directory: str | None
    wait_timeout: float
    lock_timeout: float
    ddl_lock_timeout: float
    stop_timeout: float
    log_format: str
    allow_newer_database: bool
    lint: str
    lint_allow: frozenset[str]
    lint_large_table_rows: int
    progress_interval: float
    gunicorn_args: tuple[str, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)
    """Where each given setting came from: its flag, variable or file variable."""
    environment: Mapping[str, str] = field(default_factory=dict, repr=False)
    """The environment for the app and gunicorn: the process's, plus .flaskenv/.env, plus the
    normalized DATABASE_URL."""
    started: float = field(default_factory=time.monotonic)
    """When the command started (time.monotonic): every timeout counts from here."""

    @property
    def runner_url(self) -> DatabaseUrl | None:
        """The URL the runner itself connects to (wait, lock, migrations), if given."""
        return self.migration_database_url or self.database_url

    @property
    def runner_url_source(self) -> str:
        """Where runner_url came from (a flag, a variable, a file variable), for hints."""
        name = "migration_database_url" if self.migration_database_url else "database_url"
        return self.sources.get(name, APP_URI)

    @property
    def app_environment(self) -> Mapping[str, str]:
        """The environment the runner loads the app with: `environment`, with DATABASE_URL the
        migration URL when one is given, so that env.py migrates over that connection."""
        if self.migration_database_url is None:
            return self.environment
        return {**self.environment,
                "DATABASE_URL": self.migration_database_url.render()}

    def remaining(self, timeout: float) -> float:
        """Seconds left of a budget of `timeout` seconds from the start; never negative."""
        return max(0.0, self.started + timeout - time.monotonic())


def resolve(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve every setting: flag > environment > .flaskenv/.env > default.

    `environ` is the process environment by default; it is read, never written.
    """
    given = os.environ if environ is None else environ
    started = time.monotonic() - max(0.0, time.time() - float(given.get(STARTED_AT) or time.time()))
    env = {key: value for key, value in {**read_dotenv(given), **given}.items()
           if key not in (STARTED_AT, ATTEMPT)}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    written: dict[str, str] = {}
    for setting in SETTINGS:
        value, source = _pick(setting, flags, env)
        if value is None:
            values[setting.name] = setting.default
        else:
            values[setting.name] = setting.validate(value, source)
            sources[setting.name] = source
            written[setting.name] = str(value).strip()
    for name in ("database_url", "migration_database_url"):
        given = values[name]
        if given is not None:
            values[name] = normalize_url(given, sources[name])
    if values["database_url"] is not None:
        # The app reads DATABASE_URL when it is created, and so do gunicorn's workers: they
        # get the URL asked for, with the driver it needs, as written if it names one.
        normalized = values["database_url"]
        env["DATABASE_URL"] = (written["database_url"]
                               if normalized == parse_url(written["database_url"])
                               else normalized.render())
    return Settings(**values, gunicorn_args=tuple(flags.get("gunicorn_args") or ()),
                    sources=sources, environment=env, started=started)


def read_log_format(environ: Mapping[str, str]) -> str:
    """RUNNER_LOG_FORMAT from the environment alone: needed before the flags are parsed."""
    value = environ.get("RUNNER_LOG_FORMAT")
    return value if value in LOG_FORMATS else "text"


def read_dotenv(environ: Mapping[str, str]) -> dict[str, str]:
    """What `flask` loads from .flaskenv/.env for an environment `environ`, without writing
    os.environ: the nearest file of each name from the working directory up, .env winning
    over .flaskenv and `environ` over both; `${VAR}` expanded as python-dotenv expands it
    for flask (from the file's own earlier values, then `environ`). FLASK_SKIP_DOTENV is
    honoured as flask.helpers.get_load_dotenv reads it."""
    skip = environ.get("FLASK_SKIP_DOTENV")
    if skip and skip.lower() not in ("0", "false", "no"):
        return {}
    here = Path.cwd()
    if not any((directory / name).is_file() for directory in (here, *here.parents)
               for name in (".flaskenv", ".env")):
        return {}
    if not installed("dotenv"):
        emit("config.dotenv_ignored", ".flaskenv/.env ignored: python-dotenv is not installed"
             " (pip install python-dotenv, as `flask` needs too)", level="warning")
        return {}
    import dotenv
    from dotenv.variables import parse_variables

    loaded: dict[str, str] = {}
    for name in (".flaskenv", ".env"):
        found = dotenv.find_dotenv(name, usecwd=True)
        if not found:
            continue
        expanded: dict[str, str | None] = {}
        raw = dotenv.dotenv_values(found, encoding="utf-8", interpolate=False)
        for key, value in raw.items():
            if value is not None:
                scope = {**environ, **expanded}
                value = "".join(atom.resolve(scope) for atom in parse_variables(value))
            expanded[key] = value
        loaded.update({key: value for key, value in expanded.items() if value is not None})
    return {key: value for key, value in loaded.items() if key not in environ}


def _pick(
    setting: Setting, flags: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[Any, str]:
    """The raw value of a setting and where it came from: the flag, the variable or its file."""
    if setting.flag and flags.get(setting.name) is not None:
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

"""migrate-runner: wait for the database, migrate under an advisory lock, exec gunicorn.

The library API (what `runner.cli` is built on), for calling from a host app::

    import runner

    settings = runner.load_settings({"app": "myapp:create_app", "database_url": url})
    runner.wait_for_database(settings)
    runner.migrate(settings)

`load_settings` resolves the settings (flags, the environment, .flaskenv/.env) without
loading the app; the app is loaded when a command needs it. None of it changes the
process: os.environ is applied only while the app loads (and put back), no signal handler
is installed, the root logger's handlers are left as they were. Every expected failure
raises a RunnerError subclass carrying its ExitCode; the budgets (wait, lock) count from
when the settings were resolved.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from runner.errors import (
        ConfigError,
        DatabaseUnavailable,
        ExitCode,
        LockTimeout,
        MigrationFailed,
        NotAtHead,
        RevisionsUnusable,
        RunnerError,
    )
    from runner.migration import MigrationResult, migrate
    from runner.serve import wait_for_head
    from runner.settings import Settings
    from runner.settings import resolve as load_settings
    from runner.urls import normalize_url, parse_url
    from runner.wait import wait_for_databases as wait_for_database

__all__ = [
    "ConfigError",
    "DatabaseUnavailable",
    "ExitCode",
    "LockTimeout",
    "MigrationFailed",
    "MigrationResult",
    "NotAtHead",
    "RevisionsUnusable",
    "RunnerError",
    "Settings",
    "__version__",
    "load_settings",
    "migrate",
    "normalize_url",
    "parse_url",
    "wait_for_database",
    "wait_for_head",
]

# Imported on first use, so that `import runner` imports neither Flask nor SQLAlchemy.
_HOMES = {
    "runner.errors": ("ConfigError", "DatabaseUnavailable", "ExitCode", "LockTimeout",
                      "MigrationFailed", "NotAtHead", "RevisionsUnusable", "RunnerError"),
    "runner.migration": ("MigrationResult", "migrate"),
    "runner.serve": ("wait_for_head",),
    "runner.settings": ("Settings", "load_settings"),
    "runner.urls": ("normalize_url", "parse_url"),
    "runner.wait": ("wait_for_database",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}
_RENAMED = {"load_settings": "resolve", "wait_for_database": "wait_for_databases"}
"""The library's names for functions their modules name otherwise."""


def __getattr__(name: str) -> Any:
    if name not in _HOME_OF:
        raise AttributeError(f"module 'runner' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME_OF[name]), _RENAMED.get(name, name))
    globals()[name] = value
    return value

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

# Imported on first use, so that `import runner` imports neither Flask nor SQLAlchemy:
# each name's module, and its name there when it differs.
_HOMES = {
    **dict.fromkeys(("ConfigError", "DatabaseUnavailable", "ExitCode", "LockTimeout",
                     "MigrationFailed", "NotAtHead", "RevisionsUnusable", "RunnerError"),
                    "runner.errors"),
    "MigrationResult": "runner.migration", "migrate": "runner.migration",
    "wait_for_head": "runner.serve", "Settings": "runner.settings",
    "load_settings": "runner.settings:resolve", "normalize_url": "runner.urls",
    "parse_url": "runner.urls", "wait_for_database": "runner.wait:wait_for_databases",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'runner' has no attribute {name!r}")
    module, _, attribute = _HOMES[name].partition(":")
    value = getattr(importlib.import_module(module), attribute or name)
    globals()[name] = value
    return value

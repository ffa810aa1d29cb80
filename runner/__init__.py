"""migrate-runner: wait for the database, migrate under an advisory lock, exec gunicorn.

The library API (what `runner.cli` is built on), for calling from a host app::

    import runner

    settings = runner.load_settings({"app": "myapp:create_app", "database_url": url})
    runner.wait_for_database(settings)
    runner.migrate(settings)

None of it changes the process: os.environ is applied only while the app loads (and put
back), no signal handler is installed, the root logger's handlers are left as they were.
Every expected failure raises a RunnerError subclass carrying its ExitCode.
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
    from runner.settings import Options, Settings, load_settings, resolve_options, settings_for
    from runner.urls import normalize_url
    from runner.wait import wait_for_database, wait_for_url

__all__ = [
    "ConfigError",
    "DatabaseUnavailable",
    "ExitCode",
    "LockTimeout",
    "MigrationFailed",
    "MigrationResult",
    "NotAtHead",
    "Options",
    "RevisionsUnusable",
    "RunnerError",
    "Settings",
    "__version__",
    "load_settings",
    "migrate",
    "normalize_url",
    "resolve_options",
    "settings_for",
    "wait_for_database",
    "wait_for_head",
    "wait_for_url",
]

# Imported on first use, so that `import runner` imports neither Flask nor SQLAlchemy.
_HOMES = {
    "runner.errors": ("ConfigError", "DatabaseUnavailable", "ExitCode", "LockTimeout",
                      "MigrationFailed", "NotAtHead", "RevisionsUnusable", "RunnerError"),
    "runner.migration": ("MigrationResult", "migrate"),
    "runner.serve": ("wait_for_head",),
    "runner.settings": ("Options", "Settings", "load_settings", "resolve_options",
                        "settings_for"),
    "runner.urls": ("normalize_url",),
    "runner.wait": ("wait_for_database", "wait_for_url"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _HOME_OF:
        raise AttributeError(f"module 'runner' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME_OF[name]), name)
    globals()[name] = value
    return value

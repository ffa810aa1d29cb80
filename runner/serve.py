"""Hand the process over to gunicorn: after os.execvpe the runner's PID is gunicorn's."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import NoReturn

from flask.cli import prepare_import

from runner.errors import ConfigError
from runner.log import emit
from runner.settings import Settings


def gunicorn_app_spec(app_path: str) -> str:
    """The `module:attr` gunicorn imports for a FLASK_APP import path (loaded already)."""
    parts = re.split(r":(?![\\/])", app_path, maxsplit=1)
    module_name = prepare_import(parts[0])
    if len(parts) == 2 and parts[1]:
        return f"{module_name}:{parts[1]}"
    # A bare module: look where `flask` looks, in the same order.
    module = sys.modules.get(module_name)
    for attr in ("app", "application"):
        if hasattr(module, attr):
            return f"{module_name}:{attr}"
    for factory in ("create_app", "make_app"):
        if hasattr(module, factory):
            return f"{module_name}:{factory}()"
    return module_name


def gunicorn_argv(settings: Settings) -> list[str]:
    """gunicorn's argv: the operator's options, then the app; the bind comes from PORT."""
    return ["gunicorn", *settings.gunicorn_args, gunicorn_app_spec(settings.app_path)]


def exec_gunicorn(settings: Settings) -> NoReturn:
    """Replace this process with gunicorn serving the app; returns only by raising."""
    argv = gunicorn_argv(settings)
    # The gunicorn beside this interpreter belongs to the same virtualenv as the app.
    beside = Path(sys.executable).with_name("gunicorn")
    executable = str(beside) if beside.is_file() else "gunicorn"
    with settings.app.app_context():
        for engine in settings.app.extensions["migrate"].db.engines.values():
            engine.dispose()
    emit("serve.exec", f"exec {' '.join(argv)}", argv=argv,
         port=settings.exec_environment.get("PORT"))
    try:
        os.execvpe(executable, argv, dict(settings.exec_environment))
    except OSError as exc:
        raise ConfigError(
            f"cannot exec gunicorn ({exc.strerror}): install gunicorn in the app's environment"
        ) from None

"""Find the Flask app exactly as `flask` does, and the gunicorn app spec serving the same app."""

from __future__ import annotations

import ast
import inspect
import os
import sys
from dataclasses import dataclass
from types import ModuleType

from flask import Flask
from flask.cli import NoAppException, locate_app, prepare_import

from runner.database import error_text
from runner.errors import ConfigError
from runner.fastpath import APP_SEPARATOR, DEFAULT_APP_FILES
from runner.urls import DRIVER_PACKAGES

_FACTORY_NAMES = ("create_app", "make_app")
"""The factories flask.cli.find_best_app calls when a module holds no app."""


@dataclass(frozen=True)
class LocatedApp:
    """The app `flask` would load, where it was found, and how gunicorn imports the same app."""

    app: Flask
    import_path: str
    """FLASK_APP as given, or the default file flask found ('wsgi.py' or 'app.py')."""
    gunicorn_spec: str
    """`module:expression` for gunicorn: a factory is called, as `flask` calls it."""
    search_path: str
    """The directory the module is imported from (flask.cli.prepare_import puts it on sys.path)."""


def locate(app_path: str | None) -> LocatedApp:
    """Load the app as flask.cli.ScriptInfo.load_app does; ConfigError with a fitting hint."""
    candidates = [app_path] if app_path else list(DEFAULT_APP_FILES)
    for candidate in candidates:
        # As flask.cli.ScriptInfo.load_app splits it: a Windows drive's colon is no separator.
        path, *rest = APP_SEPARATOR.split(candidate, maxsplit=1)
        name = rest[0] if rest else None
        module_name = prepare_import(path)
        # prepare_import leaves the module's directory first on sys.path.
        search_path = sys.path[0]
        try:
            app = (locate_app(module_name, name) if app_path
                   else locate_app(module_name, None, raise_if_not_found=False))
        except Exception as exc:
            raise ConfigError(load_failure(candidate, module_name, exc)) from exc
        if app is not None:
            module = sys.modules[module_name]
            spec = f"{module_name}:{_gunicorn_expression(module, name, app)}"
            return LocatedApp(app, candidate, spec, search_path)
    raise ConfigError(
        "no app found: set --app or FLASK_APP (e.g. 'myapp:create_app'), or put wsgi.py or"
        f" app.py in the working directory {os.getcwd()!r}"
    )


def load_failure(app_path: str, module_name: str, error: BaseException) -> str:
    """One line for an app that failed to load: its real error and what to do about it."""
    if isinstance(error, NoAppException) and isinstance(error.__context__, ImportError):
        # flask wraps the ImportError raised while importing the module in a traceback text.
        error = error.__context__
    if isinstance(error, NoAppException):
        return (f"could not load the app {app_path!r}: {_first_line(str(error))}: set --app or"
                " FLASK_APP")
    where = f"working directory {os.getcwd()!r}"
    what = f"could not load the app {app_path!r}: {_error_line(error)}"
    missing = _missing_module(error)
    if missing is None:
        return f"{what} (fix the app that --app/FLASK_APP names)"
    name = missing.name or ""
    if module_name == name or module_name.startswith(name + "."):
        return (f"{what}: set --app or FLASK_APP to the app's module, or start in its"
                f" directory ({where})")
    if name.split(".")[0] in DRIVER_PACKAGES:
        return (f"{what}: the database driver is not installed: pip install"
                f" {DRIVER_PACKAGES[name.split('.')[0]]} in the app's environment, or name an"
                " installed driver in the URL (e.g. postgresql+psycopg://, mysql+pymysql://)")
    return f"{what}: install it in the app's environment, or check --app/FLASK_APP ({where})"


def _gunicorn_expression(module: ModuleType, name: str | None, app: Flask) -> str:
    """What gunicorn evaluates in `module` to get `app`, deciding as flask.cli decided."""
    if name is None:
        # find_best_app took an app the module holds, or called one of its factories.
        for attribute, value in vars(module).items():
            if value is app:
                return attribute
        for factory in _FACTORY_NAMES:
            if inspect.isfunction(getattr(module, factory, None)):
                return f"{factory}()"
        raise ConfigError(f"cannot tell how {module.__name__!r} makes its app: set --app or"
                          f" FLASK_APP to '{module.__name__}:create_app()' or"
                          f" '{module.__name__}:app'")
    expression = ast.parse(name.strip(), mode="eval").body
    # flask.cli.find_app_by_string calls a function named without parentheses; gunicorn
    # would serve the function itself.
    if isinstance(expression, ast.Name) and inspect.isfunction(getattr(module, expression.id)):
        return f"{expression.id}()"
    return name.strip()


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

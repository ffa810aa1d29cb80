"""The app is loaded as `flask` loads it, and gunicorn (through runner.wsgi) serves that app."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from gunicorn.util import import_app

from runner.app import load_flask_app
from runner.errors import ConfigError
from runner.serve import gunicorn_argv
from runner.settings import resolve

HELD_APP = """
from flask import Flask

{name} = Flask(__name__)


@{name}.get("/")
def index():
    return "held"
"""

FACTORY = """
from flask import Flask


def create_app(greeting="factory"):
    app = Flask(__name__)

    @app.get("/")
    def index():
        return greeting

    return app
"""


@pytest.fixture(autouse=True)
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The working directory; the modules imported from it are forgotten afterwards."""
    monkeypatch.chdir(tmp_path)
    for name in ("app", "wsgi", "held", "made", "pkg", "pkg.wsgi", "needs_driver"):
        # Another test may have imported a module of that name from elsewhere.
        monkeypatch.delitem(sys.modules, name, raising=False)
    saved_path = list(sys.path)
    yield tmp_path
    sys.path[:] = saved_path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def write(path: Path, source: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))


def body(app: object) -> str:
    assert isinstance(app, Flask), f"gunicorn would serve {app!r}, not a Flask app"
    return app.test_client().get("/").get_data(as_text=True)


def gunicorn_app(flask_app: str | None) -> str:
    """The app argument the runner gives gunicorn for FLASK_APP `flask_app`."""
    return gunicorn_argv(resolve({"app": flask_app}, environ={}))[-1]


@pytest.mark.parametrize(
    ("files", "flask_app", "served"),
    [
        ({"held.py": HELD_APP.format(name="app")}, "held", "held"),
        ({"held.py": HELD_APP.format(name="api")}, "held", "held"),
        ({"held.py": HELD_APP.format(name="app")}, "held:app", "held"),
        ({"made.py": FACTORY}, "made", "factory"),
        # flask calls a factory named without parentheses.
        ({"made.py": FACTORY}, "made:create_app", "factory"),
        ({"made.py": FACTORY}, "made:create_app()", "factory"),
        ({"made.py": FACTORY}, "made:create_app('hello')", "hello"),
        ({"made.py": FACTORY}, "made:create_app(greeting='hi')", "hi"),
        ({"made.py": FACTORY}, 'made:create_app("it\'s")', "it's"),
        ({"src/held.py": HELD_APP.format(name="app")}, "src/held.py", "held"),
        ({"pkg/__init__.py": FACTORY}, "pkg", "factory"),
        ({"pkg/__init__.py": FACTORY}, "pkg:create_app", "factory"),
        ({"pkg/__init__.py": FACTORY, "pkg/wsgi.py": "from pkg import create_app\n"
          "application = create_app('wsgi')\n"}, "pkg.wsgi", "wsgi"),
        ({"wsgi.py": HELD_APP.format(name="app"), "app.py": FACTORY}, None, "held"),
        ({"app.py": FACTORY}, None, "factory"),
    ],
)
def test_every_flask_app_form_is_served_as_flask_loads_it(
    project: Path, files: dict[str, str], flask_app: str | None, served: str
) -> None:
    for name, source in files.items():
        write(project / name, source)
    assert body(load_flask_app(flask_app)) == served
    # gunicorn's own loader, given the runner's app argument, serves the same app.
    assert body(import_app(gunicorn_app(flask_app))) == served


def test_a_path_form_is_imported_from_its_directory(project: Path) -> None:
    write(project / "src" / "held.py", HELD_APP.format(name="app"))
    load_flask_app("src/held.py")
    assert sys.path[0] == str(project / "src")


@pytest.mark.parametrize(
    ("source", "flask_app", "expected"),
    [
        ("import psycopg2\n", "needs_driver", "pip install psycopg2-binary"),
        ("import MySQLdb\n", "needs_driver", "pip install mysqlclient"),
        ("import not_installed_helper\n", "needs_driver",
         "No module named 'not_installed_helper': install it in the app's environment (pip"
         " install not_installed_helper)"),
        ("import pkg_resources.extern.nothing\n", "needs_driver", "pip install setuptools"),
        ("1 / 0\n", "needs_driver", "ZeroDivisionError: division by zero (fix the app"),
        ("import sqlalchemy as sa\n"
         "def create_app():\n"
         "    sa.create_engine('sqlite:////nonexistent/dir/x.db').connect()\n",
         "needs_driver:create_app",
         "OperationalError: unable to open database file (fix the app"),
        ("", "absent_module:create_app", "set --app or FLASK_APP"),
        ("app = 1\n", "needs_driver:create_app", "Failed to find attribute 'create_app'"),
    ],
)
def test_an_app_that_fails_to_load_shows_its_error_and_a_fitting_hint(
    project: Path, source: str, flask_app: str, expected: str
) -> None:
    write(project / "needs_driver.py", source)
    with pytest.raises(ConfigError) as raised:
        load_flask_app(flask_app)
    message = str(raised.value)
    assert expected in message
    assert "\n" not in message
    assert "Background on this error" not in message


def test_missing_module_names_flask_app_and_the_working_directory(project: Path) -> None:
    with pytest.raises(ConfigError, match="FLASK_APP") as raised:
        load_flask_app("absent_module:create_app")
    assert "ModuleNotFoundError: No module named 'absent_module'" in str(raised.value)
    assert str(project) in str(raised.value)


def test_no_app_and_no_default_file(project: Path) -> None:
    with pytest.raises(ConfigError, match=r"Could not locate a Flask application.*set --app or"
                       r" FLASK_APP"):
        load_flask_app(None)


def test_gunicorn_gets_one_line_for_an_app_that_fails_to_load(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gunicorn.errors import AppImportError

    write(project / "broken.py", "1 / 0\n")
    monkeypatch.setenv("RUNNER_LOG_FORMAT", "json")
    with pytest.raises(AppImportError) as raised:
        import_app(gunicorn_app("broken:create_app"))
    record = json.loads(str(raised.value))
    assert record["event"] == "config.invalid"
    assert "ZeroDivisionError" in record["message"] and "FLASK_APP" in record["message"]

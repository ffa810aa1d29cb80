"""The app is found as `flask` finds it, and gunicorn's app spec serves that same app."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from gunicorn.util import import_app

from runner.discovery import locate
from runner.errors import ConfigError

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


@pytest.mark.parametrize(
    ("files", "flask_app", "spec", "served"),
    [
        ({"held.py": HELD_APP.format(name="app")}, "held", "held:app", "held"),
        ({"held.py": HELD_APP.format(name="api")}, "held", "held:api", "held"),
        ({"held.py": HELD_APP.format(name="app")}, "held:app", "held:app", "held"),
        ({"made.py": FACTORY}, "made", "made:create_app()", "factory"),
        # flask calls a factory named without parentheses; gunicorn would serve the function.
        ({"made.py": FACTORY}, "made:create_app", "made:create_app()", "factory"),
        ({"made.py": FACTORY}, "made:create_app()", "made:create_app()", "factory"),
        ({"made.py": FACTORY}, "made:create_app('hello')", "made:create_app('hello')", "hello"),
        ({"made.py": FACTORY}, "made:create_app(greeting='hi')",
         "made:create_app(greeting='hi')", "hi"),
        ({"src/held.py": HELD_APP.format(name="app")}, "src/held.py", "held:app", "held"),
        ({"pkg/__init__.py": FACTORY}, "pkg", "pkg:create_app()", "factory"),
        ({"pkg/__init__.py": FACTORY}, "pkg:create_app", "pkg:create_app()", "factory"),
        ({"pkg/__init__.py": FACTORY, "pkg/wsgi.py": "from pkg import create_app\n"
          "application = create_app('wsgi')\n"}, "pkg.wsgi", "pkg.wsgi:application", "wsgi"),
        ({"wsgi.py": HELD_APP.format(name="app"), "app.py": FACTORY}, None, "wsgi:app", "held"),
        ({"app.py": FACTORY}, None, "app:create_app()", "factory"),
    ],
)
def test_every_flask_app_form_is_served_as_flask_loads_it(
    project: Path, files: dict[str, str], flask_app: str | None, spec: str, served: str
) -> None:
    for name, source in files.items():
        write(project / name, source)
    located = locate(flask_app)
    assert body(located.app) == served
    assert located.gunicorn_spec == spec
    # gunicorn's own loader, given the spec, serves the same app.
    assert body(import_app(spec)) == served


def test_path_form_is_imported_from_its_directory(project: Path) -> None:
    write(project / "src" / "held.py", HELD_APP.format(name="app"))
    located = locate("src/held.py")
    assert located.search_path == str(project / "src")
    assert located.import_path == "src/held.py"


def test_default_file_is_named_for_gunicorn(project: Path) -> None:
    write(project / "app.py", FACTORY)
    assert locate(None).import_path == "app.py"


@pytest.mark.parametrize(
    ("source", "flask_app", "expected"),
    [
        ("import psycopg2\n", "needs_driver", "pip install psycopg2-binary"),
        ("import MySQLdb\n", "needs_driver", "pip install mysqlclient"),
        ("import not_installed_helper\n", "needs_driver",
         "No module named 'not_installed_helper': install it"),
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
        locate(flask_app)
    message = str(raised.value)
    assert expected in message
    assert "\n" not in message
    assert "Background on this error" not in message


def test_missing_module_names_flask_app_and_the_working_directory(project: Path) -> None:
    with pytest.raises(ConfigError, match="FLASK_APP") as raised:
        locate("absent_module:create_app")
    assert "ModuleNotFoundError: No module named 'absent_module'" in str(raised.value)
    assert str(project) in str(raised.value)


def test_no_app_and_no_default_file(project: Path) -> None:
    with pytest.raises(ConfigError, match="no app found: set --app or FLASK_APP"):
        locate(None)

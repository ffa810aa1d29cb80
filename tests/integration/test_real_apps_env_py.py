"""Safety nets whatever env.py does: the stock env.py of Flask-Migrate 2.0, 2.7, 3.1 and 4.

Flask-Migrate 2.0-2.6 wrote an env.py that builds its own engine (`engine_from_config`),
2.7 one that uses `db.engine`, 3.x `db.get_engine()`, 4 a `get_engine()` helper. Apps keep
the env.py `flask db init` wrote for them; the DDL lock timeout and the stop on a signal
must reach the connection the revisions run on in every case. Real servers, real runner
processes: a session holds "user" the way an app's idle-in-transaction session does.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from support import (
    APPS,
    KINDS,
    DatabaseFactory,
    at_head_then_add,
    copy_app,
    event_names,
    events,
    gave_up_on_a_table_lock,
    hold_table,
    kind_of,
    read_until,
    run_runner,
    runner_env,
    start_runner,
    version_rows,
)

ENV_PY_DIR = APPS / "env_py"
ENV_PY = {
    # `flask db init` of each release, kept exactly as written (tests/apps/env_py).
    "2.0": ENV_PY_DIR / "flask_migrate_2_0.py",  # engine_from_config: its own engine
    "2.7": ENV_PY_DIR / "flask_migrate_2_7.py",  # db.engine
    "3.1": ENV_PY_DIR / "flask_migrate_3_1.py",  # db.get_engine()
    "4": None,  # the example's own migrations/env.py (Flask-Migrate 4.x)
}

ADD_COLUMN = 'op.add_column("user", sa.Column("nickname", sa.String(40), nullable=True))'
LOCK_TIMEOUT = 10
"""--lock-timeout of a blocked `runner migrate`: it gives up after about that many seconds.
The budget runs from the start, so it leaves room for the app to load on a loaded machine
(seconds) and still for three tries of the 1 s table-lock timeout."""
BLOCKED_BUDGET = 60
"""Seconds a blocked `runner migrate` may take before the test calls it a hang (killed)."""
SLACK = 24
"""Seconds beyond LOCK_TIMEOUT a blocked run may take to give up and exit on a loaded
machine: the bound catches a deadline several times over (a wait for the table lock, or a
retry, that outlives it), not a slow start."""


def with_env_py(project: Path, version: str) -> Path:
    """The project (a copy of the example) with the env.py of that Flask-Migrate release."""
    source = ENV_PY[version]
    if source is not None:
        shutil.copyfile(source, project / "migrations" / "env.py")
    return project


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("version", list(ENV_PY))
def test_table_lock_timeout_reaches_the_env_py_of_every_flask_migrate(
    project: Path, new_database: DatabaseFactory, kind: str, version: str
) -> None:
    url = new_database(kind)
    with_env_py(project, version)
    old, new = at_head_then_add(project, url, ADD_COLUMN)
    with hold_table(url):
        started = time.monotonic()
        # A hang raises TimeoutExpired (the process is killed): the test fails.
        result = run_runner(["migrate", "--ddl-lock-timeout", "1",
                             "--lock-timeout", str(LOCK_TIMEOUT)],
                            runner_env(url), cwd=project, timeout=BLOCKED_BUDGET)
        took = time.monotonic() - started
    # The timeout reached env.py's connection: each try ended by it, nothing to warn about.
    gave_up_on_a_table_lock(result, url, new)
    assert version_rows(url) == [old]
    assert took < LOCK_TIMEOUT + SLACK, (
        f"gave up after {took:.1f}s with --lock-timeout {LOCK_TIMEOUT}")


@pytest.mark.parametrize("kind", KINDS)
def test_table_lock_timeout_in_a_project_flask_migrate_2_generated(
    new_database: DatabaseFactory, tmp_path: Path, kind: str
) -> None:
    # fm2_app: env.py, alembic.ini (its own logging) and revisions as Flask-Migrate 2.0 wrote
    # them; its last revision alters "user".
    url = new_database(kind)
    app = copy_app(APPS / "fm2_app", tmp_path / "fm2_app")
    versions = app / "migrations" / "versions"
    last = versions / "9eeb64ea3a14_user_display_name.py"
    aside = last.rename(tmp_path / last.name)
    env = runner_env(url, FLASK_APP="fm2app:create_app")
    before = run_runner(["migrate"], env, cwd=app, timeout=60)
    assert before.returncode == 0, before.stderr
    aside.rename(last)
    with hold_table(url):
        result = run_runner(["migrate", "--ddl-lock-timeout", "1",
                             "--lock-timeout", str(LOCK_TIMEOUT)],
                            env, cwd=app, timeout=BLOCKED_BUDGET)
    gave_up_on_a_table_lock(result, url, "9eeb64ea3a14")  # every line JSON, one error
    assert version_rows(url) == ["135512c181cc"]


# An env.py that hands Alembic a connection SQLAlchemy's connect never saw: a `creator`
# returns the driver's connection itself, so no connect hook of the runner's runs on it.
CREATOR_ENGINE = """
def _own_driver_connection():
    import psycopg
    url = current_app.extensions['migrate'].db.engine.url
    return psycopg.connect(host=url.host, port=url.port, user=url.username,
                           dbname=url.database)


def get_engine():
    from sqlalchemy import create_engine, pool
    return create_engine('postgresql+psycopg://', creator=_own_driver_connection,
                         poolclass=pool.NullPool)
"""


@pytest.mark.postgresql
def test_connection_out_of_reach_is_reported_once(project: Path, postgresql_url: str) -> None:
    env_py = project / "migrations" / "env.py"
    text = env_py.read_text()
    start = text.index("def get_engine():")
    end = text.index("def get_engine_url():")
    env_py.write_text(text[:start] + CREATOR_ENGINE.lstrip() + "\n\n" + text[end:])
    result = run_runner(["migrate"], runner_env(postgresql_url), cwd=project, timeout=60)
    assert result.returncode == 0, result.stderr
    warnings = [record for record in events(result.stderr)
                if record["event"] == "ddl.lock_timeout_unavailable"]
    assert len(warnings) == 1, result.stderr
    assert warnings[0]["level"] == "warning"
    assert "env.py" in str(warnings[0]["message"])
    assert "migrate.applied" in event_names(result.stderr)


def blocked_statements(url: str) -> list[str]:
    """The ALTER TABLE statements running in the test's database, waiting or not."""
    parsed = sa.make_url(url)
    if kind_of(url) == "postgresql":
        admin = parsed.set(database="postgres")
        query = ("SELECT query FROM pg_stat_activity WHERE datname = :db"
                 " AND state = 'active' AND query ILIKE 'ALTER TABLE%'")
    else:
        admin = parsed.set(database=None)
        query = ("SELECT info FROM information_schema.processlist WHERE db = :db"
                 " AND info LIKE 'ALTER TABLE%'")
    engine = sa.create_engine(admin, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return [str(row) for row in connection.scalars(sa.text(query),
                                                           {"db": parsed.database})]
    finally:
        engine.dispose()


def wait_for(condition: str, check: Callable[[], object], timeout: float = 20) -> None:
    """Poll `check` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"never saw {condition} within {timeout:g}s")
        time.sleep(0.1)


@pytest.mark.parametrize("ddl_lock_timeout", ["0", "30"])
@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_stops_a_blocked_statement_under_flask_migrate_2_env_py(
    project: Path, new_database: DatabaseFactory, kind: str, ddl_lock_timeout: str
) -> None:
    url = new_database(kind)
    with_env_py(project, "2.0")
    old, new = at_head_then_add(project, url, ADD_COLUMN)
    with hold_table(url):
        process = start_runner(
            ["migrate", "--ddl-lock-timeout", ddl_lock_timeout, "--stop-timeout", "1"],
            runner_env(url), project)
        try:
            seen = read_until(process, f"-> {new}")
            # The ALTER is on the server, waiting for the table lock the session holds.
            wait_for("the ALTER TABLE waiting on the server", lambda: blocked_statements(url))
            process.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            _, err = process.communicate(timeout=30)
            took = time.monotonic() - signalled
        except BaseException:  # a failed wait: leave no runner behind
            process.kill()
            process.communicate()
            raise
        # Still holding the table: what stopped the ALTER was the runner, not the session
        # (within 15 s, short of the 30 s the ALTER could wait).
        wait_for("no ALTER TABLE left on the server", lambda: not blocked_statements(url),
                 timeout=15)
    stderr = "".join(seen) + err
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    # Well before the 30 s a blocked ALTER could wait (or forever, with 0): stopped, not
    # waited for; an idle machine takes about a second.
    assert took < 20, f"exited {took:.1f}s after SIGTERM"
    names = event_names(stderr)
    assert "runner.stopping" in names
    assert "lock.released" in names
    assert version_rows(url) == [old]

"""Table-lock timeouts: a migration blocked by a long transaction gives way to the app's reads.

Real servers, real runner processes: a session holds a lock on "user" the way an app's
idle-in-transaction session does, readers query "user" with a 3 s statement timeout the
way the app's requests do, and `runner migrate` adds a column to "user".
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from runner.errors import ExitCode
from runner.table_locks import lock_timeout_on_connect
from support import (
    KINDS,
    DatabaseFactory,
    add_revision,
    app_readers,
    at_head_then_add,
    event_names,
    finish,
    gave_up_on_a_table_lock,
    hold_table,
    killed_on_failure,
    one_error,
    read_until,
    records,
    run_runner,
    runner_env,
    start_runner,
    version_rows,
)

ADD_COLUMN = 'op.add_column("user", sa.Column("nickname", sa.String(40), nullable=True))'


def blocked(lock_timeout: int = 8) -> list[str]:
    """`runner migrate` as the issue tries it: a 1 s DDL lock timeout, an 8 s lock deadline."""
    return ["migrate", "--ddl-lock-timeout", "1", "--lock-timeout", str(lock_timeout)]


def migrate_blocked(project: Path, url: str) -> subprocess.CompletedProcess[str]:
    return run_runner(blocked(), runner_env(url), cwd=project)


@pytest.mark.parametrize("kind", KINDS)
def test_blocked_migration_gives_up_with_exit_4_while_reads_go_on(
    project: Path, new_database: DatabaseFactory, kind: str
) -> None:
    url = new_database(kind)
    old, new = at_head_then_add(project, url, ADD_COLUMN)
    with hold_table(url), app_readers(url) as readers:
        result = migrate_blocked(project, url)
    retries = gave_up_on_a_table_lock(result, url, new)
    message = str(one_error(result, ExitCode.LOCK_TIMEOUT)["message"])
    assert "table lock" in message
    assert "RUNNER_DDL_LOCK_TIMEOUT" in message and "RUNNER_LOCK_TIMEOUT" in message
    assert all(record["level"] == "warning" for record in retries)
    assert "lock.released" in event_names(result.stderr)
    assert version_rows(url) == [old]
    assert readers.failed == []
    assert len(readers.latencies) > 10


@pytest.mark.parametrize("kind", KINDS)
def test_blocker_that_lets_go_lets_the_retry_succeed(
    project: Path, new_database: DatabaseFactory, kind: str
) -> None:
    url = new_database(kind)
    _, new = at_head_then_add(project, url, ADD_COLUMN)
    with app_readers(url) as readers:
        with hold_table(url):
            # A budget with room for retries whatever the app's load took: the blocker lets
            # go once the first try has timed out, and the retry after it must succeed.
            process = start_runner(blocked(120), runner_env(url), project)
            with killed_on_failure(process):
                seen = read_until(process, '"ddl.lock_timeout"')
        result = finish(process, seen)
    assert result.returncode == 0, result.stderr
    assert records(result.stderr, "ddl.lock_timeout")
    assert "migrate.applied" in event_names(result.stderr)
    assert version_rows(url) == [new]
    assert readers.latencies, "the readers never read"
    assert readers.failed == []


@pytest.mark.mysql
def test_mariadb_revision_blocked_after_its_first_statement_is_half_applied(
    project: Path, mysql_url: str
) -> None:
    _, new = at_head_then_add(project, mysql_url, 'op.create_table("half_thing",'
                          ' sa.Column("id", sa.Integer, primary_key=True))\n' + ADD_COLUMN)
    with hold_table(mysql_url):
        result = migrate_blocked(project, mysql_url)
    error = one_error(result, ExitCode.MIGRATION_FAILED)
    assert error["revision"] == new
    assert "half-applied" in str(error["message"])
    assert not records(result.stderr, "ddl.lock_timeout")
    engine = sa.create_engine(mysql_url, poolclass=sa.pool.NullPool)
    try:
        assert sa.inspect(engine).has_table("half_thing")
    finally:
        engine.dispose()


@pytest.mark.postgresql
def test_autocommit_block_is_not_retried_and_invalid_index_is_named(
    project: Path, postgresql_url: str
) -> None:
    _, new = at_head_then_add(project, postgresql_url, (
        "with op.get_context().autocommit_block():\n"
        '    op.create_index("ix_user_nick", "user", ["username", "email"],'
        " postgresql_concurrently=True)"
    ))
    # A writer's open transaction: CREATE INDEX CONCURRENTLY waits for it to end.
    with hold_table(postgresql_url, statement='LOCK TABLE "user" IN ROW EXCLUSIVE MODE'):
        result = migrate_blocked(project, postgresql_url)
    error = one_error(result, ExitCode.MIGRATION_FAILED)
    assert error["revision"] == new
    message = str(error["message"])
    assert "autocommit_block" in message
    assert "DROP INDEX CONCURRENTLY public.ix_user_nick" in message
    assert not records(result.stderr, "ddl.lock_timeout")


@pytest.mark.postgresql
def test_earlier_revision_with_autocommit_block_stops_the_retries(
    project: Path, postgresql_url: str
) -> None:
    # With env.py's one transaction for the run, the lock timeout of the second revision
    # rolls back the end of the first, whose concurrent index is already committed.
    _, first = at_head_then_add(project, postgresql_url, (
        "with op.get_context().autocommit_block():\n"
        '    op.create_index("ix_post_title", "post", ["title"], postgresql_concurrently=True)'
    ))
    add_revision(project, "add_column", ADD_COLUMN)
    with hold_table(postgresql_url):
        result = migrate_blocked(project, postgresql_url)
    message = str(one_error(result, ExitCode.MIGRATION_FAILED)["message"])
    assert f"because revision {first} ran statements outside" in message
    assert not records(result.stderr, "ddl.lock_timeout")


OBSERVE = {
    # RESET returns to the session's startup value: the option survives a revision's RESET.
    "postgresql": 'op.execute("RESET lock_timeout")\n'
                  'value = op.get_bind().exec_driver_sql("SHOW lock_timeout").scalar()',
    "mysql": 'value = op.get_bind().exec_driver_sql("SELECT @@SESSION.lock_wait_timeout")'
             ".scalar()",
}
RECORD = ('op.create_table("observed", sa.Column("value", sa.String(40)))\n'
          'op.get_bind().execute(sa.text("INSERT INTO observed VALUES (:v)"), {"v": str(value)})')


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("timeout", ["2", "0"])
def test_migration_session_has_the_lock_timeout(
    project: Path, new_database: DatabaseFactory, kind: str, timeout: str
) -> None:
    url = new_database(kind)
    at_head_then_add(project, url, OBSERVE[kind] + "\n" + RECORD)
    result = run_runner(["migrate"], runner_env(url, RUNNER_DDL_LOCK_TIMEOUT=timeout),
                        cwd=project)
    assert result.returncode == 0, result.stderr
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            observed = connection.exec_driver_sql("SELECT value FROM observed").scalar()
            server_default = connection.exec_driver_sql(
                "SHOW lock_timeout" if kind == "postgresql"
                else "SELECT @@GLOBAL.lock_wait_timeout"
            ).scalar()
    finally:
        engine.dispose()
    if timeout == "0":
        assert observed == str(server_default)
    else:
        assert observed == ("2s" if kind == "postgresql" else "2")


@pytest.mark.parametrize("kind", KINDS)
def test_lock_timeout_only_while_inside(new_database: DatabaseFactory, kind: str) -> None:
    url = new_database(kind)
    show = "SHOW lock_timeout" if kind == "postgresql" else "SELECT @@SESSION.lock_wait_timeout"
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            before = connection.exec_driver_sql(show).scalar()
        # The connection opened before is pooled; it must not be handed out inside.
        with lock_timeout_on_connect([engine], 1.5), engine.connect() as connection:
            inside = connection.exec_driver_sql(show).scalar()
        with engine.connect() as connection:
            after = connection.exec_driver_sql(show).scalar()
    finally:
        engine.dispose()
    assert inside == ("1500ms" if kind == "postgresql" else 2)
    assert after == before != inside

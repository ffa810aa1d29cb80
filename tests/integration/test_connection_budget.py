"""A rollout's herd against a stock server: at most one connection per replica, none failing.

A Deployment scaled out or rolled at once starts every pod's init container together,
against a server that also serves the running pods' pools. Each replica may hold one
connection at a time (its lock connection, closed by a waiter between two polls); the one
that wins the lock holds one more for the upgrade. "Too many connections" is backed off and retried.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from runner.drivers import VersionTable, lock_name
from runner.drivers.postgresql import advisory_key
from support import (
    PrivateMariadb,
    PrivatePostgresql,
    add_revision,
    event_names,
    peak_connections,
    prepare,
    private_mariadb,
    private_postgresql,
    read_until,
    runner_env,
    start_herd,
    start_runner,
    version_rows,
)

SLOW_REVISION = {"postgresql": 'op.execute("SELECT pg_sleep(3)")',
                 "mysql": 'op.execute("SELECT SLEEP(3)")'}
"""A 3 s revision, so that the waiters pile up while the winner migrates."""


def run_herd(replicas: int, url: str, cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    """Start `replicas` `runner migrate` at once, with room to wait, and wait for all of them."""
    return start_herd(url, cwd, {"RUNNER_WAIT_TIMEOUT": "120", "RUNNER_LOCK_TIMEOUT": "300"},
                      replicas, timeout=600)


def applied_count(results: list[subprocess.CompletedProcess[str]]) -> int:
    return sum("migrate.applied" in event_names(result.stderr) for result in results)


@pytest.mark.postgresql
def test_a_30_replica_herd_holds_at_most_one_connection_each(
    postgresql_url: str, project: Path
) -> None:
    add_revision(project, "slow", SLOW_REVISION["postgresql"])
    database = sa.make_url(postgresql_url).database
    assert database
    admin = sa.make_url(postgresql_url).set(database="postgres").render_as_string(
        hide_password=False)
    with peak_connections(admin, database) as peak:
        results = run_herd(30, postgresql_url, project)
    print(f"30 replicas: peak {peak[0]} connections to the database")
    assert [result.returncode for result in results] == [0] * 30, [
        result.stderr[-2000:] for result in results if result.returncode]
    assert applied_count(results) == 1
    # The winner's upgrade connection is the one allowed beyond one per replica.
    assert peak[0] <= 30 + 1
    # The sampler saw the herd: a peak of 0 or 1 would pass the bound above vacuously.
    assert peak[0] >= 2


@pytest.fixture
def stock_postgresql() -> Iterator[PrivatePostgresql]:
    """A private PostgreSQL with the stock max_connections (100)."""
    with private_postgresql() as server:
        server.start("max_connections=100")
        yield server


@pytest.mark.postgresql
def test_100_replicas_on_a_stock_postgresql_with_15_connections_taken(
    stock_postgresql: PrivatePostgresql, project: Path
) -> None:
    add_revision(project, "slow", SLOW_REVISION["postgresql"])
    rollout(100, stock_postgresql.admin_url, stock_postgresql.url, project)


@pytest.fixture
def stock_mariadb() -> Iterator[PrivateMariadb]:
    """A private MariaDB with the stock max_connections (151)."""
    with private_mariadb() as server:
        server.start()
        yield server


@pytest.mark.mysql
@pytest.mark.stress  # the heaviest here (150 interpreters at once): -m "not stress" skips it
def test_150_replicas_on_a_stock_mariadb_with_15_connections_taken(
    stock_mariadb: PrivateMariadb, project: Path
) -> None:
    add_revision(project, "slow", SLOW_REVISION["mysql"])
    rollout(150, stock_mariadb.url, stock_mariadb.url, project)


def rollout(replicas: int, admin_url: str, server_url: str, project: Path) -> None:
    """`replicas` runners at once on a new database `app` of a stock server whose running
    pods' pools hold 15 connections: all exit 0, exactly one applies.

    The project is prepared (`runner prepare`, as the image templates run it at build): a
    rollout this size is an image's. Without the manifest every replica loads the app under
    the lock in turn to learn the head (docs/performance.md), and a hundred loads in a row
    on two cores shared by all the replicas approach the 300 s lock budget; the herds of
    test_waiters and the 30 replicas above cover that path."""
    engine = sa.create_engine(admin_url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text("CREATE DATABASE app"))
    engine.dispose()
    app_url = sa.make_url(server_url).set(database="app").render_as_string(hide_password=False)
    direct = sa.make_url(admin_url).set(database="app").render_as_string(hide_password=False)
    prepare(project, runner_env(app_url))
    # The running pods' pools: 15 connections held for the whole rollout.
    pool = sa.create_engine(direct, pool_size=15, max_overflow=0)
    held = [pool.connect() for _ in range(15)]
    started = time.monotonic()
    try:
        results = run_herd(replicas, app_url, project)
    finally:
        for connection in held:
            connection.close()
        pool.dispose()
    codes = [result.returncode for result in results]
    backed_off = sum("too many" in result.stderr.lower() for result in results)
    print(f"{replicas} replicas: exit codes {sorted(set(codes))}, {applied_count(results)}"
          f" applied, {backed_off} backed off on too many connections,"
          f" {time.monotonic() - started:.1f}s")
    failures = [result.stderr[-2000:] for result in results if result.returncode]
    assert codes == [0] * replicas, failures[:3]
    assert applied_count(results) == 1
    assert len(version_rows(direct)) == 1


@pytest.mark.postgresql
@pytest.mark.parametrize("manifest", ["prepared", "not prepared"])
def test_waiters_leave_the_holder_room_to_connect(
    cluster_of_six: PrivatePostgresql, project: Path, manifest: str
) -> None:
    """With the lock held and five waiters on a server with room for six sessions, the holder
    can still open the connection it migrates on: a waiter lets go of its connection between
    two polls when the server is short of room. (When waiters kept their connection open,
    the server stayed full until they gave up.)"""
    env = runner_env(cluster_of_six.url)
    if manifest == "prepared":
        prepare(project, env)
    key = advisory_key(lock_name("postgres", VersionTable()))
    holder = sa.create_engine(cluster_of_six.admin_url, poolclass=sa.pool.NullPool,
                              isolation_level="AUTOCOMMIT")
    waiters: list[subprocess.Popen[str]] = []
    try:
        with holder.connect() as lock_session:
            lock_session.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            waiters = [start_runner(["migrate"], env, project) for _ in range(5)]
            for waiter in waiters:
                wait_for_event(waiter, "lock.waiting")
            # The migrating holder's second connection: refused only while the server is full.
            connected = 0
            for _ in range(20):
                try:
                    with holder.connect():
                        connected += 1
                except sa.exc.OperationalError as exc:
                    assert "too many clients" in str(exc)
                time.sleep(0.1)
            assert connected > 0, "the waiters kept the server full"
        # The lock is free and the database behind: one waiter migrates, the rest see head.
        results = [waiter.communicate(timeout=120) for waiter in waiters]
    finally:
        for waiter in waiters:
            if waiter.poll() is None:
                waiter.kill()
        holder.dispose()
    codes = [waiter.returncode for waiter in waiters]
    assert codes == [0] * 5, [err[-2000:] for _, err in results]
    assert sum("migrate.applied" in event_names(err) for _, err in results) == 1


@pytest.fixture
def cluster_of_six() -> Iterator[PrivatePostgresql]:
    """A private PostgreSQL with room for six sessions, superusers included."""
    with private_postgresql() as server:
        server.start("max_connections=6", "superuser_reserved_connections=0",
                     "max_wal_senders=0")
        yield server


def wait_for_event(process: subprocess.Popen[str], name: str) -> None:
    """Read `process`'s stderr up to its first `name` event; every line read is an event."""
    seen = read_until(process, f'"{name}"')
    assert event_names("".join(seen))[-1] == name, "".join(seen)

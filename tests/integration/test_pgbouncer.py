"""Through PgBouncer in transaction pooling, the lock excludes nothing: `migrate` refuses (exit 2).

With MIGRATION_DATABASE_URL pointing at the database directly, the lock and the migrations
go there while the app served keeps the pooled DATABASE_URL. The tests start their own
PgBouncer (Debian's `pgbouncer`) on a free port in front of the shared PostgreSQL; without
the binary they skip locally and fail in CI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from runner import locks
from runner.locks.postgresql import PostgresqlLock
from support import (
    REPLICAS,
    REQUIRE_DATABASES,
    cmdline,
    event_names,
    free_port,
    get,
    one_error,
    run_runner,
    runner_env,
    start_herd,
    start_runner,
    unavailable,
)

pytestmark = pytest.mark.postgresql


@pytest.fixture
def pgbouncer() -> Iterator[int]:
    """A PgBouncer in transaction pooling mode on a free port, in front of the test server."""
    with running_pgbouncer("transaction") as port:
        yield port


@pytest.fixture
def session_pgbouncer() -> Iterator[int]:
    """A PgBouncer in session pooling mode (the lock works; startup options do not pass)."""
    with running_pgbouncer("session") as port:
        yield port


@contextlib.contextmanager
def running_pgbouncer(pool_mode: str) -> Iterator[int]:
    """A PgBouncer with `pool_mode` on a free port, in front of the test server."""
    # Debian installs it in /usr/sbin, which a non-root PATH may lack.
    binary = shutil.which("pgbouncer") or shutil.which("/usr/sbin/pgbouncer")
    if binary is None:
        unavailable("pgbouncer is not installed: apt-get install -y pgbouncer", REQUIRE_DATABASES)
    port = free_port()
    server = sa.make_url(os.environ.get("TEST_POSTGRESQL_URL",
                                        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    # World-readable: PgBouncer refuses to run as root, so as root it drops to `nobody`.
    with tempfile.TemporaryDirectory(prefix="pgbouncer-") as directory:
        home = Path(directory)
        home.chmod(0o755)
        (home / "users.txt").write_text(f'"{server.username}" ""\n')
        (home / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={server.host} port={server.port or 5432}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {home / 'users.txt'}\n"
            f"pool_mode = {pool_mode}\n"
        )
        for path in home.iterdir():
            path.chmod(0o644)
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        process = subprocess.Popen([binary, *user, str(home / "pgbouncer.ini")],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 10
            while not _accepts(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    output = process.communicate()[0]
                    pytest.fail(f"pgbouncer did not start: {output}")
                time.sleep(0.1)
            yield port
        finally:
            process.terminate()
            process.communicate(timeout=10)


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def advisory_locks(direct_url: str) -> list[tuple[int, int]]:
    """The advisory locks on the database, read on a direct connection: (pid, objid)."""
    engine = sa.create_engine(direct_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(
                "SELECT pid, objid::bigint FROM pg_locks WHERE locktype = 'advisory'"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ))]
    finally:
        engine.dispose()


def pooled(direct_url: str, port: int) -> str:
    """The same database through the pooler."""
    url = sa.make_url(direct_url).set(host="127.0.0.1", port=port)
    return url.render_as_string(hide_password=False)


# With the migrations directory given, the lock is taken before the app is loaded (the fast
# path, runner.fastlock), then handed to the full path, which must find the pooler all the same.
FAST_OR_FULL = pytest.mark.parametrize(
    "fast", [{}, {"RUNNER_MIGRATIONS_DIR": "migrations"}], ids=["full", "fast"])


@FAST_OR_FULL
def test_migrate_through_a_transaction_pooler_exits_2(
    postgresql_url: str, pgbouncer: int, fast: dict[str, str]
) -> None:
    result = run_runner(["migrate"], runner_env(pooled(postgresql_url, pgbouncer), **fast))
    error = one_error(result, 2)
    assert error["event"] == "config.invalid"
    assert "MIGRATION_DATABASE_URL" in str(error["message"])
    assert "PgBouncer" in str(error["message"])
    assert advisory_locks(postgresql_url) == []
    engine = sa.create_engine(postgresql_url, poolclass=sa.pool.NullPool)
    try:
        assert not sa.inspect(engine).has_table("alembic_version"), "it migrated anyway"
    finally:
        engine.dispose()


@FAST_OR_FULL
def test_a_herd_through_the_pooler_all_refuse(
    postgresql_url: str, pgbouncer: int, fast: dict[str, str]
) -> None:
    # A lock left on a pooled session would make the others wait: exit 4, not a hang.
    results = start_herd(pooled(postgresql_url, pgbouncer),
                         extra_env={"RUNNER_LOCK_TIMEOUT": "30", **fast})
    codes = [result.returncode for result in results]
    print(f"herd through PgBouncer: exit codes {codes}")
    # Each refuses (2). Through the pooler the app's own engine may also find its server
    # session broken by another client's (a prepared statement, a session ended to free a
    # stray lock): that is the database failing it (3, retried by a Job), never a crash.
    assert set(codes) <= {2, 3} and codes.count(2) >= REPLICAS // 2, [
        result.stderr for result in results if result.returncode != 2]
    assert not any("migrate.applied" in event_names(result.stderr) for result in results)
    assert advisory_locks(postgresql_url) == []


def test_the_lock_connection_prepares_nothing_and_names_its_process(postgresql_url: str) -> None:
    url = sa.make_url(postgresql_url)
    with locks.open_lock(url, locks.lock_name(url.database, "alembic_version", None)) as lock:
        assert isinstance(lock, PostgresqlLock)
        connection = lock._connection
        assert connection.connection.dbapi_connection.prepare_threshold is None  # type: ignore[union-attr]
        name = connection.scalar(sa.text("SHOW application_name"))
        assert name == f"migrate-runner {socket.gethostname()} {os.getpid()}"


def test_direct_connection_passes_the_check(postgresql_url: str) -> None:
    result = run_runner(["migrate"], runner_env(postgresql_url))
    assert result.returncode == 0, result.stderr
    assert advisory_locks(postgresql_url) == []


def test_a_herd_through_the_pooler_with_a_direct_migration_url(
    postgresql_url: str, pgbouncer: int
) -> None:
    results = start_herd(pooled(postgresql_url, pgbouncer),
                         extra_env={"MIGRATION_DATABASE_URL": postgresql_url})
    assert [result.returncode for result in results] == [0] * REPLICAS, [
        result.stderr for result in results if result.returncode]
    applied = [result for result in results if "migrate.applied" in event_names(result.stderr)]
    assert len(applied) == 1
    assert advisory_locks(postgresql_url) == []


def test_the_served_app_keeps_the_pooled_url(postgresql_url: str, pgbouncer: int) -> None:
    through_pooler = pooled(postgresql_url, pgbouncer)
    port = free_port()
    served = start_runner(["run"], runner_env(
        through_pooler, MIGRATION_DATABASE_URL=postgresql_url, PORT=str(port)))
    try:
        status, _ = get(f"http://127.0.0.1:{port}/", time.monotonic() + 60)
        assert status == 200
        assert any("gunicorn" in part for part in cmdline(served.pid))
        environment = dict(
            entry.split("=", 1) for entry in
            Path(f"/proc/{served.pid}/environ").read_bytes().decode().split("\0") if "=" in entry)
        assert environment["DATABASE_URL"] == through_pooler
    finally:
        served.terminate()
        _, stderr = served.communicate(timeout=30)
    assert "migrate.applied" in event_names(stderr)


def test_a_session_pooler_that_rejects_the_lock_timeout_option_exits_2(
    postgresql_url: str, session_pgbouncer: int
) -> None:
    through_pooler = pooled(postgresql_url, session_pgbouncer)
    result = run_runner(["migrate"], runner_env(through_pooler))
    error = one_error(result, 2)
    assert "MIGRATION_DATABASE_URL" in str(error["message"])
    assert "startup option" in str(error["message"])
    assert advisory_locks(postgresql_url) == []
    # Session pooling keeps the lock's session: without the option it migrates.
    result = run_runner(["migrate"], runner_env(through_pooler, RUNNER_DDL_LOCK_TIMEOUT="0"))
    assert result.returncode == 0, result.stderr
    assert "migrate.applied" in event_names(result.stderr)

"""Through PgBouncer, in transaction or session pooling, migrations simply work: the lock
lives in a transaction, on the one server session that transaction runs on, and ends with
it; exactly one replica applies, the others see head, no lock is left behind.

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
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from runner.drivers import VersionTable, open_driver
from runner.urls import parse_url
from support import (
    EXAMPLE,
    POSTGRESQL_ADMIN,
    REPLICAS,
    REQUIRE_DATABASES,
    add_revision,
    cmdline,
    copy_app,
    event_names,
    free_port,
    fresh_database,
    gave_up_on_a_table_lock,
    get,
    hold_table,
    one_error,
    prepare,
    run_runner,
    runner_env,
    start_herd,
    start_runner,
    unavailable,
    version_rows,
)

pytestmark = pytest.mark.postgresql


@pytest.fixture
def pgbouncer() -> Iterator[int]:
    """A PgBouncer in transaction pooling mode on a free port, in front of the test server,
    with two server sessions per database: one for the lock's transaction, one for the
    upgrade's (and the waiters' short transactions, in turn)."""
    with running_pgbouncer("transaction", pool_size=2) as port:
        yield port


@pytest.fixture
def session_pgbouncer() -> Iterator[int]:
    """A PgBouncer in session pooling mode (the lock works; startup options do not pass)."""
    with running_pgbouncer("session") as port:
        yield port


@contextlib.contextmanager
def running_pgbouncer(pool_mode: str, pool_size: int = 20) -> Iterator[int]:
    """A PgBouncer with `pool_mode` on a free port, in front of the test server."""
    # Debian installs it in /usr/sbin, which a non-root PATH may lack.
    binary = shutil.which("pgbouncer") or shutil.which("/usr/sbin/pgbouncer")
    if binary is None:
        unavailable("pgbouncer is not installed: apt-get install -y pgbouncer", REQUIRE_DATABASES)
    port = free_port()
    server = sa.make_url(POSTGRESQL_ADMIN)
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
            f"pool_mode = {pool_mode}\ndefault_pool_size = {pool_size}\n"
        )
        for path in home.iterdir():
            path.chmod(0o644)
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        # Its log to a file: a pipe nobody reads fills up, and PgBouncer, blocked writing
        # its log, would stop serving everyone.
        log = home / "pgbouncer.log"
        with log.open("w") as output:
            log.chmod(0o666)
            process = subprocess.Popen([binary, *user, str(home / "pgbouncer.ini")],
                                       stdout=output, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 10
            while not _accepts(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    process.wait()
                    pytest.fail(f"pgbouncer did not start: {log.read_text()}")
                time.sleep(0.1)
            yield port
        finally:
            process.terminate()
            process.wait(timeout=10)


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


PREPARED_OR_NOT = pytest.mark.parametrize("prepared", [False, True],
                                         ids=["not prepared", "prepared"])


def herd_through(direct_url: str, url: str, project: Path, prepared: bool,
                 extra: dict[str, str] | None = None) -> list[subprocess.CompletedProcess[str]]:
    """A herd of `runner migrate` on `url` (the project prepared or not): all exit 0,
    exactly one applies, and no advisory lock is left on the server."""
    env_extra = {"RUNNER_LOCK_TIMEOUT": "60", **(extra or {})}
    if prepared:
        prepare(project, runner_env(url, **env_extra))
    results = start_herd(url, cwd=project, extra_env=env_extra)
    codes = [result.returncode for result in results]
    assert codes == [0] * REPLICAS, [result.stderr[-3000:] for result in results
                                     if result.returncode]
    applied = [result for result in results if "migrate.applied" in event_names(result.stderr)]
    assert len(applied) == 1
    assert advisory_locks(direct_url) == []
    assert version_rows(direct_url)
    return results


def test_migrate_through_a_transaction_pooler_migrates(postgresql_url: str, pgbouncer: int
                                                       ) -> None:
    result = run_runner(["migrate"], runner_env(pooled(postgresql_url, pgbouncer)))
    assert result.returncode == 0, result.stderr
    assert "migrate.applied" in event_names(result.stderr)
    assert advisory_locks(postgresql_url) == []


@PREPARED_OR_NOT
def test_a_herd_through_the_transaction_pooler_applies_once(
    postgresql_url: str, pgbouncer: int, project: Path, prepared: bool
) -> None:
    herd_through(postgresql_url, pooled(postgresql_url, pgbouncer), project, prepared)


def test_through_the_pooler_the_table_lock_timeout_holds_per_transaction(
    postgresql_url: str, pgbouncer: int, project: Path
) -> None:
    """PgBouncer refuses the startup option: the upgrade's transactions SET LOCAL it."""
    # The lock budget runs from the start: room for the app to load on a loaded machine,
    # then for more than one try of the 1 s table-lock timeout.
    env = runner_env(pooled(postgresql_url, pgbouncer), RUNNER_DDL_LOCK_TIMEOUT="1",
                     RUNNER_LOCK_TIMEOUT="10")
    assert run_runner(["migrate"], env, cwd=project).returncode == 0
    alter = add_revision(project, "alter",
                         'op.add_column("user", sa.Column("nick", sa.String(20)))')
    with hold_table(postgresql_url):
        result = run_runner(["migrate"], env, cwd=project)
    assert one_error(result, 4)["event"] == "lock.timeout"
    gave_up_on_a_table_lock(result, postgresql_url, alter)
    assert advisory_locks(postgresql_url) == []


def test_the_lock_connection_prepares_nothing_and_names_its_process(postgresql_url: str) -> None:
    with open_driver(parse_url(postgresql_url), VersionTable(), 5) as driver:
        assert driver.connection.prepare_threshold is None
        with driver.reading() as cursor:
            cursor.execute("SHOW application_name")
            (name,) = cursor.fetchone()
        assert name == f"migrate-runner {socket.gethostname()} {os.getpid()}"


def test_direct_connection_passes_the_check(postgresql_url: str) -> None:
    result = run_runner(["migrate"], runner_env(postgresql_url))
    assert result.returncode == 0, result.stderr
    assert advisory_locks(postgresql_url) == []


def test_a_herd_through_the_pooler_with_a_direct_migration_url(
    postgresql_url: str, pgbouncer: int, project: Path
) -> None:
    herd_through(postgresql_url, pooled(postgresql_url, pgbouncer), project, False,
                 {"MIGRATION_DATABASE_URL": postgresql_url})


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


def test_a_session_pooler_that_rejects_the_lock_timeout_option_migrates(
    postgresql_url: str, session_pgbouncer: int, project: Path
) -> None:
    through_pooler = pooled(postgresql_url, session_pgbouncer)
    herd_through(postgresql_url, through_pooler, project, True)


@contextlib.contextmanager
def busy_cpus(count: int = 2) -> Iterator[None]:
    """`count` CPU-bound processes running beside the block, as on a busy CI machine. None
    under pytest-xdist: the other workers' tests already load the cores."""
    under_xdist = bool(os.environ.get("PYTEST_XDIST_WORKER"))
    burners = [] if under_xdist else [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


HERDS = 20


@pytest.mark.stress
@pytest.mark.parametrize("route", ["through the pooler", "direct migration url"])
def test_herds_under_load_have_one_outcome(pgbouncer: int, tmp_path: Path, route: str) -> None:
    """20 herds of 8 on fresh databases, on a loaded machine (two CPU-bound processes beside
    them, or the other xdist workers): every herd exits 0 with exactly one replica applying,
    and no advisory lock is left behind."""
    outcomes: list[list[int]] = []
    with busy_cpus():
        for index in range(HERDS):
            project = copy_app(EXAMPLE, tmp_path / f"project-{index}")
            with fresh_database("postgresql") as direct:
                extra = {"MIGRATION_DATABASE_URL": direct} if route != "through the pooler" else {}
                results = herd_through(direct, pooled(direct, pgbouncer), project,
                                       prepared=index % 2 == 1, extra=extra)
                outcomes.append([result.returncode for result in results])
    print(f"{route}: {len(outcomes)} herds of {REPLICAS}, exit codes"
          f" {sorted({code for codes in outcomes for code in codes})}, one applied in each")


def test_a_statement_pooler_is_refused_naming_what_works(postgresql_url: str) -> None:
    """Statement pooling refuses transactions, and the lock lives in one: exit 2."""
    with running_pgbouncer("statement") as port:
        result = run_runner(["migrate"], runner_env(pooled(postgresql_url, port)))
    error = one_error(result, 2)
    assert "statement mode" in error["message"] and "MIGRATION_DATABASE_URL" in error["message"]
    assert advisory_locks(postgresql_url) == []

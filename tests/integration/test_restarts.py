"""A database restart: exit 3 mid-upgrade (retryable), waited out by readings and waits.

The server restarted is a private PostgreSQL cluster the test starts on a free port;
the shared servers are never stopped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.errors import ExitCode
from support import (
    PrivatePostgresql,
    add_revision,
    event_names,
    finish,
    free_port,
    get,
    killed_on_failure,
    private_postgresql,
    read_until,
    run_runner,
    runner_env,
    start_herd,
    start_runner,
    stop,
    version_rows,
)


@pytest.fixture
def cluster() -> Iterator[PrivatePostgresql]:
    """A private PostgreSQL cluster on a free port, started; removed after the test."""
    with private_postgresql() as server:
        server.start()
        yield server


def test_restart_mid_upgrade_exits_3_and_a_rerun_completes(
    project: Path, cluster: PrivatePostgresql
) -> None:
    slow = add_revision(
        project, "slow",
        'op.create_table("slow_first", sa.Column("id", sa.Integer, primary_key=True))\n'
        'if os.environ.get("SLOW_MIGRATION"):\n'
        '    op.execute("SELECT pg_sleep(30)")\n'
        'op.create_table("slow_second", sa.Column("id", sa.Integer, primary_key=True))',
        imports="import os",
    )
    process = start_runner(["migrate"], runner_env(cluster.admin_url, SLOW_MIGRATION="1"), project)
    with killed_on_failure(process):
        seen = read_until(process, f"-> {slow}")
        time.sleep(0.5)
        cluster.stop()
        cluster.start()
        stderr = finish(process, seen, timeout=60).stderr
    assert process.returncode == ExitCode.DATABASE_UNAVAILABLE, stderr
    assert "Traceback" not in stderr
    assert "migrate.failed" not in event_names(stderr)

    rerun = run_runner(["migrate"], runner_env(cluster.admin_url), project)
    assert rerun.returncode == 0, rerun.stderr
    assert version_rows(cluster.admin_url) == [slow]


def test_serve_wait_for_head_survives_a_restart_and_serves(
    project: Path, cluster: PrivatePostgresql
) -> None:
    port = free_port()
    env = runner_env(cluster.admin_url, PORT=str(port))
    server = start_runner(["serve", "--wait-for-head", "--wait-timeout", "120"], env, project)
    try:
        read_until(server, '"serve.waiting"')
        cluster.stop()
        time.sleep(2)
        cluster.start()
        migrated = run_runner(["migrate"], runner_env(cluster.admin_url), project)
        assert migrated.returncode == 0, migrated.stderr
        status, body = get(f"http://127.0.0.1:{port}/healthz", time.monotonic() + 60)
        assert status == 200, body
        assert server.poll() is None
    finally:
        stop(server)


def test_too_many_connections_is_waited_out(project: Path, cluster: PrivatePostgresql) -> None:
    # Room for three sessions, superusers included: most replicas are refused at first.
    cluster.stop()
    cluster.start("max_connections=3", "superuser_reserved_connections=0",
                  "max_wal_senders=0")
    results = start_herd(cluster.admin_url, project)
    codes = [result.returncode for result in results]
    assert codes == [0] * len(results), "\n".join(r.stderr for r in results if r.returncode)
    assert version_rows(cluster.admin_url) == ["06dac530478c"]

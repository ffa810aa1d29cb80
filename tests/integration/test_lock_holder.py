"""Who holds the migration lock: waiters, `lock.timeout` and `runner status` name it."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from support import (
    copy_app,
    events,
    finish,
    gated_revision,
    one_error,
    prepare,
    read_until,
    run_runner,
    runner_env,
    start_runner,
)


@contextlib.contextmanager
def holding(project: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """A runner migrating a revision held until the test creates RUNNER_TEST_GATE, yielded
    once it holds the migration lock. However the block ends, the gate is opened after it,
    and the runner finishes (killed if it does not within 120 s): no lock is left held."""
    gated_revision(project)
    gate = Path(env["RUNNER_TEST_GATE"])
    holder = start_runner(["migrate"], env, cwd=project)
    try:
        read_until(holder, '"lock.acquired"')
        yield holder
    finally:
        gate.touch()
        finish(holder)


def names_holder(holder: dict[str, Any] | None, pid: int) -> None:
    assert holder is not None
    assert holder["pid"] == pid
    assert holder["host"] == socket.gethostname()
    assert holder["since"]


def test_waiters_and_status_name_the_holder(
    database_url: str, project: Path, tmp_path: Path
) -> None:
    env = runner_env(database_url, RUNNER_TEST_GATE=str(tmp_path / "gate"))
    termination_log = tmp_path / "termination-log"
    with holding(project, env) as holder:
        # A replica with a manifest, which knows the head before it loads the app.
        prepared = copy_app(project, tmp_path / "prepared")
        prepare(prepared, env)
        waiter = run_runner(["migrate", "--lock-timeout", "2"],
                            {**env, "RUNNER_TERMINATION_LOG": str(termination_log)}, cwd=project)
        fast_waiter = run_runner(["migrate", "--lock-timeout", "2"], env, cwd=prepared)
        status = run_runner(["status", "--json"], env, cwd=project)
        status_text = run_runner(["status"], env, cwd=project)
    assert holder.returncode == 0

    waiting = [record for record in events(waiter.stderr) if record["event"] == "lock.waiting"]
    assert waiting, waiter.stderr
    names_holder(waiting[0]["holder"], holder.pid)
    assert f"pid {holder.pid} on host {socket.gethostname()}" in waiting[0]["message"]
    timeout = one_error(waiter, 4)
    assert timeout["event"] == "lock.timeout"
    names_holder(timeout["holder"], holder.pid)
    assert f"pid {holder.pid} on host {socket.gethostname()} since" in timeout["message"]
    summary = json.loads(termination_log.read_text())
    assert summary["exit_code"] == 4
    assert summary["event"] == "lock.timeout"
    assert summary["message"] == timeout["message"]
    assert summary["revisions"] == []
    names_holder(summary["holder"], holder.pid)
    fast_waiting = [record for record in events(fast_waiter.stderr)
                    if record["event"] == "lock.waiting"]
    assert fast_waiting, fast_waiter.stderr
    names_holder(fast_waiting[0]["holder"], holder.pid)
    fast_timeout = one_error(fast_waiter, 4)
    assert fast_timeout["event"] == "lock.timeout"
    names_holder(fast_timeout["holder"], holder.pid)

    assert status.returncode == 0, status.stderr
    migration = json.loads(status.stdout)["migration"]
    assert migration["in_progress"] is True
    names_holder(migration["holder"], holder.pid)
    assert f"migration in progress: lock held by pid {holder.pid}" in status_text.stdout

    # Once the holder is gone, nobody holds the lock.
    after = run_runner(["status", "--json"], env, cwd=project)
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["migration"] is None

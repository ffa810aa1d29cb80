"""`runner run` becomes gunicorn: same PID, serves the app, stops cleanly on SIGTERM."""

from __future__ import annotations

import subprocess
import time

from support import (
    cmdline,
    event_names,
    events,
    free_port,
    get,
    run_runner,
    runner_env,
    script_heads,
    start_runner,
    stop,
    version_rows,
)


def test_run_migrates_then_becomes_gunicorn(sqlite_url: str) -> None:
    port = free_port()
    served = start_runner(["run", "--", "--workers", "2"],
                          runner_env(sqlite_url, PORT=str(port)))
    try:
        check_served(served, port, sqlite_url)
    finally:
        if served.poll() is None:
            served.kill()
            served.communicate()


def check_served(served: subprocess.Popen[str], port: int, sqlite_url: str) -> None:
    deadline = time.monotonic() + 60
    base = f"http://127.0.0.1:{port}"
    status, body = get(base + "/", deadline)
    assert status == 200, body
    assert get(base + "/healthz", deadline)[0] == 200
    argv = cmdline(served.pid)
    assert any("gunicorn" in part for part in argv), argv
    assert "runner.wsgi:serve('app:create_app()')" in argv
    assert version_rows(sqlite_url) == script_heads()

    started = time.monotonic()
    _, err = stop(served)
    print(f"gunicorn stopped by SIGTERM in {time.monotonic() - started:.2f}s")
    assert served.returncode == 0
    runner_events = [line for line in err.splitlines() if line.startswith("{")]
    names = event_names("\n".join(runner_events))
    assert names[:2] == ["db.ready", "lock.acquired"]
    exec_at = names.index("serve.exec")
    assert "migrate.applied" in names[:exec_at]
    # After the exec, gunicorn's own lines are events too (the default gunicorn config).
    assert "gunicorn.error" in names[exec_at + 1:]


def test_probes_log_nothing_and_workers_no_alembic_info(sqlite_url: str) -> None:
    """A probe every few seconds must not fill the logs: a successful /healthz or /readyz is
    not in the access log, and the app's workers add no Alembic INFO lines."""
    assert run_runner(["migrate"], runner_env(sqlite_url)).returncode == 0
    port = free_port()
    served = start_runner(["serve"], runner_env(sqlite_url, PORT=str(port)))
    try:
        deadline = time.monotonic() + 60
        for path in ("/readyz", "/healthz", "/readyz", "/"):
            assert get(f"http://127.0.0.1:{port}{path}", deadline)[0] == 200
    finally:
        out, err = stop(served)
    # The access log is on stdout, everything else on stderr.
    records = events("\n".join(line for line in (out + err).splitlines() if line.startswith("{")))
    access = [record["path"] for record in records if record["event"] == "gunicorn.access"]
    assert access == ["/"]
    assert not [record for record in records if record["event"].startswith("alembic")
                and record["level"] == "info"]

"""`runner run` becomes gunicorn: same PID, serves the app, stops cleanly on SIGTERM."""

from __future__ import annotations

import subprocess
import time

from support import (
    cmdline,
    event_names,
    free_port,
    get,
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

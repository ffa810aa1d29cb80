"""`runner run` becomes gunicorn: same PID, serves the app, stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from support import (
    EXAMPLE,
    cmdline,
    event_names,
    free_port,
    get,
    runner_command,
    runner_env,
    script_heads,
    version_rows,
)


@pytest.fixture
def served(sqlite_url: str) -> subprocess.Popen[str]:
    port = free_port()
    process = subprocess.Popen(
        runner_command("run", "--", "--workers", "2"),
        env=runner_env(sqlite_url, PORT=str(port)), cwd=EXAMPLE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    process.port = port  # type: ignore[attr-defined]
    yield process
    if process.poll() is None:
        process.kill()
        process.communicate()


def test_run_migrates_then_becomes_gunicorn(served: subprocess.Popen[str], sqlite_url: str) -> None:
    deadline = time.monotonic() + 60
    base = f"http://127.0.0.1:{served.port}"  # type: ignore[attr-defined]
    status, body = get(base + "/", deadline)
    assert status == 200, body
    assert get(base + "/healthz", deadline)[0] == 200
    argv = cmdline(served.pid)
    assert any("gunicorn" in part for part in argv), argv
    assert "app:create_app()" in argv
    assert version_rows(sqlite_url) == script_heads()

    started = time.monotonic()
    served.send_signal(signal.SIGTERM)
    _, err = served.communicate(timeout=30)
    print(f"gunicorn stopped by SIGTERM in {time.monotonic() - started:.2f}s")
    assert served.returncode == 0
    runner_events = [line for line in err.splitlines() if line.startswith("{")]
    names = event_names("\n".join(runner_events))
    assert names[:2] == ["db.ready", "lock.acquired"]
    assert names[-1] == "serve.exec"
    assert "migrate.applied" in names

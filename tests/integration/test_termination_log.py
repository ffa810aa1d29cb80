"""`runner migrate` leaves its outcome in RUNNER_TERMINATION_LOG, for `kubectl describe pod`.

The lock timeout (exit 4, with its holder) is checked in test_lock_holder.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from support import add_revision, one_error, run_runner, runner_env, script_heads, scripts


def test_a_failing_revision_is_summarised(database_url: str, project: Path, tmp_path: Path) -> None:
    bad = add_revision(project, "bad", 'op.execute("SELECT * FROM no_such_table_anywhere")')
    target = tmp_path / "termination-log"
    env = runner_env(database_url, RUNNER_TERMINATION_LOG=str(target))
    result = run_runner(["migrate"], env, cwd=project)
    error = one_error(result, 7)
    summary = json.loads(target.read_text())
    assert set(summary) == {"exit_code", "event", "message", "revisions", "holder"}
    assert summary["exit_code"] == 7
    assert summary["event"] == "migrate.failed"
    assert summary["message"] == error["message"]
    assert bad in summary["message"]
    assert summary["holder"] is None


def test_applied_revisions_then_a_noop(sqlite_url: str, tmp_path: Path) -> None:
    target = tmp_path / "termination-log"
    env = runner_env(sqlite_url, RUNNER_TERMINATION_LOG=str(target))
    assert run_runner(["migrate"], env).returncode == 0
    summary = json.loads(target.read_text())
    assert summary["exit_code"] == 0
    assert summary["event"] == "migrate.applied"
    history = [script.revision for script in reversed(list(scripts().walk_revisions()))]
    assert summary["revisions"] == history
    assert summary["revisions"][-1] == script_heads()[0]

    assert run_runner(["migrate"], env).returncode == 0
    assert json.loads(target.read_text())["event"] == "migrate.noop"
    assert json.loads(target.read_text())["revisions"] == []

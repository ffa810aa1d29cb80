"""A migrator killed with SIGKILL mid-migration leaves no stale lock behind."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from support import (
    add_revision,
    event_names,
    killed_on_failure,
    read_until,
    run_runner,
    runner_env,
    start_runner,
    version_rows,
)


@pytest.mark.postgresql
def test_next_runner_finishes_after_the_holder_is_killed(
    project: Path, postgresql_url: str
) -> None:
    slow = add_revision(
        project,
        "slow",
        'op.create_table("slow_thing", sa.Column("id", sa.Integer, primary_key=True))\n'
        'if os.environ.get("SLOW_MIGRATION"):\n'
        "    time.sleep(600)",
        imports="import os\nimport time",
    )
    # RUNNER_LINT off: rendering the revision offline for the safety check would sleep too.
    holder = start_runner(["migrate"], runner_env(postgresql_url, SLOW_MIGRATION="1",
                                                  RUNNER_LINT="off"), project)
    with killed_on_failure(holder):
        read_until(holder, f"-> {slow}")
    holder.send_signal(signal.SIGKILL)
    holder.communicate(timeout=10)

    result = run_runner(["migrate", "--lock-timeout", "60"], runner_env(postgresql_url),
                        cwd=project)
    assert result.returncode == 0, result.stderr
    names = event_names(result.stderr)
    assert "lock.acquired" in names
    assert "migrate.applied" in names
    assert version_rows(postgresql_url) == [slow]

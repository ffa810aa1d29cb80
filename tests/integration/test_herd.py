"""Eight replicas start at once on one empty database: exactly one migrates."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import (
    REPLICAS,
    add_revision,
    event_names,
    script_heads,
    start_herd,
    version_rows,
)


@pytest.mark.parametrize("slow", [False, True], ids=["example", "slow-revision"])
def test_eight_replicas_one_migrates(
    database_url: str, project: Path, slow: bool
) -> None:
    if slow:
        # Starting 8 interpreters on 2 cores staggers them by seconds, longer than the
        # example's migrations take: a slow revision makes the replicas overlap for
        # sure, so without the lock several would migrate (and crash) at once.
        add_revision(project, "slow", "time.sleep(4)", imports="import time")
    results = start_herd(database_url, cwd=project)

    codes = [result.returncode for result in results]
    logs = [event_names(result.stderr) for result in results]
    applied = sum("migrate.applied" in names for names in logs)
    noops = sum("migrate.noop" in names for names in logs)
    print(f"herd {database_url.split(':')[0]}: exit codes {codes}, applied {applied}, noop {noops}")
    assert codes == [0] * REPLICAS, [result.stderr for result in results if result.returncode]
    assert applied == 1
    assert noops == REPLICAS - 1
    assert version_rows(database_url) == script_heads(project / "migrations")
    # Only the migrator may take the lock; a replica that found head must not hold it.
    assert sum("lock.released" in names for names in logs) >= 1
    assert not any("migrate.failed" in names for names in logs)

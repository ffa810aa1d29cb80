"""Eight replicas start at once on one empty database: exactly one migrates."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import (
    REPLICAS,
    add_revision,
    event_names,
    execute,
    gated_revision,
    prepare,
    runner_env,
    script_heads,
    start_herd,
    version_rows,
)


@pytest.mark.parametrize("prepared", [False, True], ids=["not prepared", "prepared"])
@pytest.mark.parametrize("gated", [False, True], ids=["example", "held-revision"])
def test_eight_replicas_one_migrates(
    database_url: str, project: Path, tmp_path: Path, gated: bool, prepared: bool
) -> None:
    if gated:
        # Starting 8 interpreters on 2 cores staggers them by seconds, longer than the
        # example's migrations take: a revision held until every other replica waits on
        # the lock makes them overlap for sure, so without the lock several would migrate
        # (and crash) at once.
        gated_revision(project)
    if prepared:
        prepare(project, runner_env(database_url))
    results = start_herd(database_url, cwd=project,
                         gate=tmp_path / "gate" if gated else None)

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


@pytest.mark.postgresql
def test_a_herd_builds_an_index_concurrently_while_the_others_wait(
    postgresql_url: str, project: Path, tmp_path: Path
) -> None:
    """The lock lives in a transaction the holder keeps open: a CREATE INDEX CONCURRENTLY in
    its upgrade waits for transactions holding old snapshots, and that one holds none (nor
    do the waiters' short ones), so the build ends while every other replica polls."""
    env = runner_env(postgresql_url)
    prepare(project, env)
    assert start_herd(postgresql_url, cwd=project, replicas=1)[0].returncode == 0
    execute(postgresql_url, "INSERT INTO post (title, slug) SELECT 'title ' || n, 'slug-' || n"
            " FROM generate_series(1, 20000) AS n")
    gated_revision(project)
    add_revision(project, "concurrent", "with op.get_context().autocommit_block():\n"
                 '    op.create_index("ix_post_title", "post", ["title"],'
                 " postgresql_concurrently=True)")
    prepare(project, env)
    results = start_herd(postgresql_url, cwd=project, gate=tmp_path / "gate")
    assert [result.returncode for result in results] == [0] * REPLICAS, [
        result.stderr[-2000:] for result in results if result.returncode]
    assert sum("migrate.applied" in event_names(result.stderr) for result in results) == 1
    assert version_rows(postgresql_url) == script_heads(project / "migrations")

"""Blocked-migration benchmark: how long the app's reads wait while a migration waits for a table.

A session idle in a transaction holds a lock on "user" until --hold seconds after
`runner migrate`, which adds a column to "user", has taken the migration lock; reader
threads query "user" in a loop, as the app's requests do. Without a DDL lock timeout the
ALTER waits in the lock queue and every read queues behind it; with RUNNER_DDL_LOCK_TIMEOUT
the ALTER gives way and retries.

Run: .venv/bin/python tests/benchmark_blocking.py [--hold SECONDS] [--ddl-lock-timeout S].
Prints read latencies (max, p95, how many reads were blocked) and the migration's outcome,
with RUNNER_DDL_LOCK_TIMEOUT=0 (none) and with the timeout; it asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from support import (
    EXAMPLE,
    app_readers,
    at_head_then_add,
    copy_app,
    event_names,
    fresh_database,
    hold_table,
    read_until,
    runner_env,
    start_runner,
)

STALLED = 0.5
"""A read slower than this many seconds counts as blocked."""

ADD_COLUMN = 'op.add_column("user", sa.Column("nickname", sa.String(40), nullable=True))'


def blocked_migration(kind: str, hold: float, ddl_lock_timeout: str) -> str:
    """One blocked migration; a line with the readers' latencies and the migration's outcome."""
    with fresh_database(kind) as url, tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        copy_app(EXAMPLE, project)
        at_head_then_add(project, url, ADD_COLUMN)
        env = runner_env(url, RUNNER_DDL_LOCK_TIMEOUT=ddl_lock_timeout)
        # Readers with a generous statement timeout, so a blocked read is measured, not cut.
        with app_readers(url, statement_timeout=hold * 4) as readers:
            with hold_table(url):
                process = start_runner(["migrate", "--lock-timeout", str(hold * 4)], env,
                                       cwd=project)
                # The hold counts from when the migration starts, not the runner's start-up.
                read_until(process, '"lock.acquired"')
                started = time.monotonic()
                time.sleep(hold)
            _, stderr = process.communicate(timeout=hold * 8)
            elapsed = time.monotonic() - started
            time.sleep(1)
    latencies = sorted(readers.latencies)
    p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan")
    stalled = sum(latency for latency in latencies if latency > STALLED)
    return (
        f"{kind:10} ddl timeout {ddl_lock_timeout + 's':4} reads {len(latencies):4}"
        f" failed {len(readers.failed)}: read latency max {max(latencies, default=0):5.2f}s"
        f" p95 {p95:5.3f}s, {sum(latency > STALLED for latency in latencies):2} reads over"
        f" {STALLED:g}s ({stalled:5.2f}s in all) | migrate exit {process.returncode},"
        f" {elapsed:5.2f}s after taking the lock, {event_names(stderr).count('ddl.lock_timeout')}"
        " ddl.lock_timeout"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hold", type=float, default=6.0,
                        help="seconds the blocking session holds the table [6]")
    parser.add_argument("--ddl-lock-timeout", default="1",
                        help="RUNNER_DDL_LOCK_TIMEOUT of the run with a timeout [1]")
    args = parser.parse_args()
    print(f"a session holds \"user\" until {args.hold:g}s after `runner migrate` (adding a"
          " column to it) took the migration lock; 2 readers query it every 50 ms")
    for kind in ("postgresql", "mysql"):
        for timeout in ("0", args.ddl_lock_timeout):
            print(blocked_migration(kind, args.hold, timeout), flush=True)


if __name__ == "__main__":
    main()

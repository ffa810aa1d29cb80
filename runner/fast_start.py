"""The fast start: decide "at head" before the app is loaded, or wait for it on the lock.

Flags and environment (`settings.plain_options`), the revision files' text
(`runner.fastpath`), and one connection with the bare driver (`runner.fastlock` when
`migrate` must wait on the migration lock). Any doubt returns None: the full path, which
loads the app, then decides and reports every error.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from runner import fastpath
from runner.database import attempt_timeout
from runner.errors import ConfigError, RunnerError
from runner.log import events
from runner.settings import plain_options

if TYPE_CHECKING:
    from runner import fastlock


def fast_head(
    flags: Mapping[str, Any], names: Sequence[str], waits: bool = False
) -> str | fastlock.BareLock | None:
    """The head, when the database is certainly at it, told without loading the app (the
    fast no-op path: flags and environment, the revision files' text, one query with the
    bare driver); None on any doubt: the full path then decides, and reports any error.

    With `waits` (migrate), a database behind is waited for on the migration lock, polled
    on that one connection: the head once another process brought the database there, or
    the lock itself (taken: the full path takes it over and migrates).
    """
    started = time.monotonic()
    try:
        plain = plain_options(flags, names)
    except ConfigError:
        return None
    if plain is None:
        return None
    plan = fastpath.prepare(plain.database_url, plain.directory)
    if isinstance(plan, fastpath.FastVerdict) or fastpath.app_source_doubt(plain.app):
        return None
    from runner import wait

    events.format = plain.log_format
    events.add_url_secret(plain.database_url)
    name = fastpath.describe_target(plan.target)
    connect_timeout = attempt_timeout(plain.wait_timeout)
    lock: fastlock.BareLock | None = None
    announced: list[float] = []

    def ready() -> None:
        announced.append(time.monotonic() - started)
        wait.announce_ready(name, announced[0])

    try:
        if waits and plan.target.backend != "sqlite":  # SQLite's file lock: the full path's
            from runner import fastlock

            lock = wait.wait_for_answer(
                lambda: fastlock.BareLock(plan.target, connect_timeout), name,
                plain.wait_timeout)
            rows = lock.current_revisions()
        else:
            rows = wait.wait_for_answer(
                lambda: fastpath.query_version_rows(plan.target,
                                                    connect_timeout=connect_timeout),
                name, plain.wait_timeout)
        at_head = fastpath.judge(plan, rows).at_head
        if lock is not None and not at_head:
            at_head = fastlock.take_or_wait(lock, plan.head, plain.lock_timeout, waiting=ready)
            if not at_head:
                taken, lock = lock, None
                return taken
    except RunnerError:
        raise
    except Exception:  # refused, or not as expected: the full path says what it is
        return None
    finally:
        if lock is not None:
            lock.close()
    if not at_head:
        return None
    if not announced:
        ready()
    return plan.head

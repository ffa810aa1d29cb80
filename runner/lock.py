"""Take the migration lock: polled with a try-lock under a deadline, never a blocking wait.

A blocked waiter would deadlock a `CREATE INDEX CONCURRENTLY` in the holder's upgrade, so
waiters poll, with pauses that grow from 50 ms to about a second, and stop as soon as the
version table shows the head (another process migrated). Between two polls a waiter lets
go of its connection when the server is short of room (runner.drivers: Driver.idle).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import tenacity

from runner import database, signals, wait
from runner.drivers import Driver, Holder, VersionTable
from runner.errors import LockTimeout
from runner.log import emit

MAX_POLL_INTERVAL = 1.0
"""The cap on the pause between two tries of the lock, in seconds (plus jitter)."""

POLL_GROWTH = 1.3
"""Each pause between two tries is this much longer than the last (from 50 ms, up to
MAX_POLL_INTERVAL): a waiter sees the lock free or the head arrive within about a third of
the time it has waited so far, so the replicas of a short migration exit soon after it."""

WAITING_LOG_INTERVAL = 15.0
"""How often, in seconds, a waiter repeats `lock.waiting`."""


def acquire(
    driver: Driver,
    timeout: float,
    table: VersionTable | None,
    at_head: Callable[[tuple[str, ...]], bool] | None,
    sleep: Callable[[float], None] = signals.sleep,
    while_waiting: Callable[[], object] | None = None,
) -> bool:
    """Poll until the lock is ours (True) or, with `at_head`, the version `table` shows the
    head (False); LockTimeout after `timeout` seconds, or the connection's error when the
    last try could not reach the server. A try that finds the server full or gone is tried
    again after the pause, on a new connection. `while_waiting` is called once, when a try
    first finds the lock held by another process; its time counts as waiting."""
    started = time.monotonic()
    last_logged = float("-inf")
    not_yet_waited = while_waiting
    unreachable: list[Exception] = []  # the last try's connection error, if it had one

    def attempt() -> bool | None:
        unreachable.clear()
        try:
            poll = driver.poll(table if at_head else None)
        except Exception as exc:  # any driver's error
            if not database.is_transient(exc):
                raise
            # A full server ("too many connections") or a restart: try again after the
            # pause, on a new connection (closing this one frees the lock if it was taken).
            unreachable.append(exc)
            driver.close()
            return None
        if poll.taken:
            if at_head is not None and table is not None and at_head(
                    driver.read_versions(table)):
                # Taken just as another holder let go: the head it brought ends the wait,
                # and this moment's hold is given back without a word (it held nothing).
                driver.release()
                return False
            return True
        if at_head is not None and poll.versions is not None and at_head(poll.versions):
            return False
        log_waiting()
        return None

    def log_waiting() -> None:
        # Logged when a try finds the lock held, not before the pause: a budget spent by
        # the time of the first try (a slow start) still says who held the lock before
        # `lock.timeout`.
        nonlocal last_logged
        waited = time.monotonic() - started
        if waited - last_logged >= WAITING_LOG_INTERVAL:
            last_logged = waited
            holder = _holder_or_none(driver)
            emit("lock.waiting", f"{_held_by(holder)} holds the migration lock; waiting",
                 lock=driver.lock_name, waited=round(waited, 3),
                 holder=holder.as_dict() if holder else None)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        nonlocal not_yet_waited
        if unreachable:  # not a holder's doing: the server is full or restarting
            delay = state.next_action.sleep if state.next_action else 0.0
            wait.emit_waiting(state.attempt_number, delay, unreachable[0])
            return
        driver.idle()
        if not_yet_waited is not None:
            work, not_yet_waited = not_yet_waited, None
            work()

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(timeout),
        wait=tenacity.wait_exponential(multiplier=0.05, max=MAX_POLL_INTERVAL,
                                       exp_base=POLL_GROWTH)
        + tenacity.wait_random(0, 0.1),
        retry=tenacity.retry_if_result(lambda outcome: outcome is None),
        before_sleep=before_sleep,
        sleep=sleep,
    )
    try:
        acquired = bool(retrying(attempt))
    except tenacity.RetryError:
        if unreachable:
            raise unreachable[0] from None
        waited = time.monotonic() - started
        holder = _holder_or_none(driver)
        raise LockTimeout(
            f"the migration lock {driver.lock_name!r} was still held by {_held_by(holder)}"
            f" after {waited:.1f}s: raise --lock-timeout/RUNNER_LOCK_TIMEOUT, or find the"
            " migration that holds it",
            waited=round(waited, 3),
            holder=holder.as_dict() if holder else None,
        ) from None
    if acquired:
        emit("lock.acquired", "took the migration lock", lock=driver.lock_name,
             waited=round(time.monotonic() - started, 3))
    return acquired


def _holder_or_none(driver: Driver) -> Holder | None:
    """The lock's holder for a log line; a failed lookup only leaves it unnamed."""
    try:
        return driver.holder()
    except Exception:  # any driver's error
        return None


def _held_by(holder: Holder | None) -> str:
    return f"another process ({holder.describe()})" if holder else "another process"


def release(driver: Driver, started: float, held_since: float) -> None:
    """Give the lock back and log `lock.released` (how long this process waited for it
    since `started`, how long it held it since `held_since`, both monotonic)."""
    # Closing the connection frees the lock too, so a failed release is harmless.
    with contextlib.suppress(Exception):
        driver.release()
    emit("lock.released", "released the migration lock", lock=driver.lock_name,
         waited=round(held_since - started, 3), held=round(time.monotonic() - held_since, 3))

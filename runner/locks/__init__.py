"""The migration lock: one backend per dialect, polled with a try-lock under a deadline."""

from __future__ import annotations

import abc
import hashlib
import time
from collections.abc import Callable
from types import TracebackType

import tenacity
from sqlalchemy.engine import URL

from runner.errors import ConfigError, LockTimeout
from runner.log import emit

MAX_POLL_INTERVAL = 1.0
"""The cap on the pause between two tries of the lock, in seconds."""

WAITING_LOG_INTERVAL = 15.0
"""How often, in seconds, a waiter repeats `lock.waiting`."""


class MigrationLock(abc.ABC):
    """A lock that dies with its holder; try_acquire never blocks."""

    def __init__(self, url: URL, name: str) -> None:
        self.url = url
        self.name = name

    @abc.abstractmethod
    def try_acquire(self) -> bool:
        """Take the lock if it is free; return whether this holder has it now."""

    @abc.abstractmethod
    def release(self) -> None:
        """Give the lock back; the holder stays open for another try."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the holder's connection or file, which frees the lock if still held."""

    def __enter__(self) -> MigrationLock:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def lock_name(database: str | None, version_table: str, schema: str | None) -> str:
    """The lock's name: every replica of one app agrees on it, two apps on one server differ."""
    qualified = f"{schema}.{version_table}" if schema else version_table
    return f"{database or ''}/{qualified}"


def hashed(name: str, length: int) -> str:
    """A stable hex digest of `name`, `length` characters long."""
    return hashlib.sha256(name.encode()).hexdigest()[:length]


def open_lock(url: URL, name: str) -> MigrationLock:
    """Open the dialect's lock for `name` on a dedicated connection to `url`."""
    backend = url.get_backend_name()
    if backend == "postgresql":
        from runner.locks.postgresql import PostgresqlLock

        return PostgresqlLock(url, name)
    if backend in ("mysql", "mariadb"):
        from runner.locks.mysql import MysqlLock

        return MysqlLock(url, name)
    if backend == "sqlite":
        from runner.locks.sqlite import SqliteLock

        return SqliteLock(url, name)
    raise ConfigError(
        f"no migration lock for the {backend!r} dialect: use PostgreSQL, MySQL/MariaDB"
        " or SQLite in --database-url/DATABASE_URL"
    )


def acquire(
    lock: MigrationLock,
    timeout: float,
    stop_waiting: Callable[[], bool],
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Poll until the lock is ours (True) or `stop_waiting()` is true (False); else LockTimeout."""
    started = time.monotonic()
    last_logged = float("-inf")

    def attempt() -> bool | None:
        if lock.try_acquire():
            return True
        if stop_waiting():
            return False
        return None

    def log_waiting(state: tenacity.RetryCallState) -> None:
        nonlocal last_logged
        waited = time.monotonic() - started
        if waited - last_logged >= WAITING_LOG_INTERVAL:
            last_logged = waited
            emit("lock.waiting", "another process holds the migration lock; waiting",
                 lock=lock.name, waited=round(waited, 3))

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(timeout),
        wait=tenacity.wait_exponential_jitter(multiplier=0.05, max=MAX_POLL_INTERVAL, jitter=0.1),
        retry=tenacity.retry_if_result(lambda outcome: outcome is None),
        before_sleep=log_waiting,
        sleep=sleep,
    )
    try:
        acquired = bool(retrying(attempt))
    except tenacity.RetryError:
        waited = time.monotonic() - started
        raise LockTimeout(
            f"the migration lock {lock.name!r} was still held by another process after"
            f" {waited:.1f}s: raise --lock-timeout/RUNNER_LOCK_TIMEOUT, or find the"
            " migration that holds it",
            waited=round(waited, 3),
        ) from None
    if acquired:
        emit("lock.acquired", "took the migration lock", lock=lock.name,
             waited=round(time.monotonic() - started, 3))
    return acquired

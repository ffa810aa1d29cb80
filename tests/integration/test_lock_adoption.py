"""The full path takes over the lock the fast path took, on the same PostgreSQL session."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from runner import fastlock, fastpath, locks

pytestmark = pytest.mark.postgresql


def taken_by_the_fast_path(url: str) -> tuple[fastlock.BareLock, locks.TakenConnection]:
    target = fastpath.parse_url(url)
    assert target is not None
    bare = fastlock.BareLock(target, connect_timeout=5)
    assert bare.try_acquire()
    taken = bare.detach("psycopg")
    assert taken is not None
    return bare, taken


def full_path_lock(url: str, taken: locks.TakenConnection | None) -> locks.MigrationLock:
    parsed = sa.make_url(url)
    return locks.open_lock(parsed, fastlock.migration_lock_name(fastpath.parse_url(url)),
                           taken)


def test_the_taken_lock_is_held_on_and_checked_once(postgresql_url: str) -> None:
    _, taken = taken_by_the_fast_path(postgresql_url)
    with full_path_lock(postgresql_url, taken) as lock:
        assert lock.try_acquire()
        assert lock.holder() is not None
        # Another replica cannot take it meanwhile.
        with full_path_lock(postgresql_url, None) as other:
            assert not other.try_acquire()


def test_after_its_session_is_gone_a_refusal_is_a_refusal(postgresql_url: str) -> None:
    """A waiter lets go of a session the fast path handed over (a failed try, then `idle`):
    the lock went with it, and a lock another replica took since is "held", not a pooler."""
    _, taken = taken_by_the_fast_path(postgresql_url)
    with full_path_lock(postgresql_url, taken) as lock:
        lock.idle()
        with full_path_lock(postgresql_url, None) as other:
            assert other.try_acquire()
            assert not lock.try_acquire()
            other.release()
            assert lock.try_acquire()

"""SQLite: an exclusive fcntl lock on a file beside the database file."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sqlalchemy.engine import URL

from runner.locks import MigrationLock, hashed


class SqliteLock(MigrationLock):
    """`lockf(LOCK_EX | LOCK_NB)` on `<database>.<hash>.migrate-lock`; freed with the process."""

    def __init__(self, url: URL, name: str) -> None:
        super().__init__(url, name)
        self.path: Path | None = None
        self._fd: int | None = None
        if url.database and url.database != ":memory:":
            # Beside the database, so containers sharing its volume share the lock.
            self.path = Path(url.database).with_name(
                f"{Path(url.database).name}.{hashed(name, 8)}.migrate-lock"
            )
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)

    def try_acquire(self) -> bool:
        if self._fd is None:
            # An in-memory database belongs to this process alone: nothing to race.
            return True
        try:
            fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            return False
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

"""SQLite: an exclusive fcntl lock on a file beside the database file."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from sqlalchemy.engine import URL

from runner.locks import Holder, MigrationLock, hashed, this_holder

_HOLDER_BYTES = 4096
"""The most of the lock file read back as the holder's JSON."""


class SqliteLock(MigrationLock):
    """`lockf(LOCK_EX | LOCK_NB)` on `<database>.<hash>.migrate-lock`; freed with the process.

    The holder writes itself into the file as JSON (host, pid, since) once it has the lock.
    """

    def __init__(self, url: URL, name: str) -> None:
        super().__init__(url, name)
        self.path: Path | None = None
        self._fd: int | None = None
        self._held = False
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
        if not self._held:
            self._held = True
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, json.dumps(this_holder().as_dict()).encode(), 0)
        return True

    def release(self) -> None:
        if self._fd is not None:
            if self._held:
                os.ftruncate(self._fd, 0)
            fcntl.lockf(self._fd, fcntl.LOCK_UN)
            self._held = False

    def holder(self) -> Holder | None:
        if self._fd is None:
            return None
        if not self._held:
            # fcntl locks have no "is it taken?" that is simpler than trying.
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except (BlockingIOError, PermissionError):
                pass
            else:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)
                return None
        try:
            recorded = json.loads(os.pread(self._fd, _HOLDER_BYTES, 0) or b"{}")
        except ValueError:
            # Taken, but the holder has not written itself yet.
            recorded = {}
        return Holder.from_dict(recorded)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._held = False

"""SQLite: an exclusive `flock` on a file beside the database file, which names its holder.

`flock` locks belong to an open file, not to the process (as `lockf`'s do): probing the
lock through another descriptor, to name its holder, cannot drop the one this process
holds. Containers that share the database's volume on one host share the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from runner.drivers import Driver, Holder, Poll, VersionTable, hashed, this_holder
from runner.errors import ConfigError
from runner.urls import DatabaseUrl

_HOLDER_BYTES = 4096
"""The most of the lock file read back as the holder's JSON."""


def lock_path(database: str, name: str) -> Path:
    """The lock file of the database file `database` for the lock `name`."""
    return Path(database).with_name(f"{Path(database).name}.{hashed(name, 8)}.migrate-lock")


class SqliteDriver(Driver):
    """`flock(LOCK_EX | LOCK_NB)` on `<database>.<hash>.migrate-lock`; freed with the process."""

    backend = "sqlite"

    def __init__(self, url: DatabaseUrl, name: str, connect_timeout: float) -> None:
        super().__init__(url, name, connect_timeout)
        database = url.database or ""
        self.memory = database in ("", ":memory:")
        """An in-memory database belongs to one process: nothing to lock, nothing to read."""
        self.path = None if self.memory else lock_path(database, name)
        self._fd: int | None = None

    def _open(self) -> Any:
        if self.memory:
            return sqlite3.connect(":memory:")
        # As the app's engine would, this creates the file; a directory that does not
        # exist or cannot be written is the database refusing us.
        return sqlite3.connect(self.url.database or "", timeout=self.connect_timeout)

    def poll(self, table: VersionTable | None) -> Poll:
        if self.held or self._try_flock():
            self.held = True
            self._record_holder()
            return Poll(taken=True)
        return Poll(taken=False, versions=None if table is None else self.read_versions(table))

    def _lock_file(self) -> int:
        if self._fd is None:
            self._fd = self._open_lock_file()
        return self._fd

    def _open_lock_file(self) -> int:
        """A new descriptor of the lock file; ConfigError when it cannot be created."""
        assert self.path is not None
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise ConfigError(
                f"cannot open the migration lock file {self.path}: {error.strerror}: let"
                " this user write to the database file's directory") from None

    def _try_flock(self) -> bool:
        if self.memory:
            return True
        try:
            fcntl.flock(self._lock_file(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _record_holder(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, json.dumps(this_holder().as_dict()).encode(), 0)

    def read_versions(self, table: VersionTable) -> tuple[str, ...]:
        if self.memory:
            return ()
        with self.scope():
            exists = self.fetch("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'"
                                " AND name = ?", (table.name,))
            if not exists[0][0]:
                return ()
            quoted = '"' + table.name.replace('"', '""') + '"'
            return tuple(str(row[0]) for row in self.fetch(f"SELECT version_num FROM {quoted}"))

    def release(self) -> None:
        if self.held and self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self.held = False

    def holder(self) -> Holder | None:
        if self.memory or self.path is None:
            return None
        if not self.held:
            # A lock has no "is it taken?" simpler than trying, on a descriptor of its own.
            probe = self._open_lock_file()
            try:
                try:
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass
                else:
                    return None
            finally:
                os.close(probe)  # frees the probe's own lock, never ours
        try:
            recorded = json.loads(self.path.read_bytes()[:_HOLDER_BYTES] or b"{}")
        except (OSError, ValueError):
            recorded = {}  # taken, but the holder has not written itself yet
        if not recorded:
            return Holder(host=None, pid=None, why_unknown="it has not recorded itself yet")
        return Holder.from_dict(recorded)

    def close(self) -> None:
        super().close()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        self.held = False

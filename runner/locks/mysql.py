"""MySQL and MariaDB: a named user lock on a connection of its own."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import URL

from runner import database
from runner.locks import MigrationLock, hashed


class MysqlLock(MigrationLock):
    """`GET_LOCK(name, 0)`; the server frees it when the connection ends."""

    def __init__(self, url: URL, name: str) -> None:
        super().__init__(url, name)
        # Lock names are server-wide and at most 64 characters.
        self.lock_name = f"migrate-runner/{hashed(name, 40)}"
        self._engine = database.create_engine(url)
        self._connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def try_acquire(self) -> bool:
        query = sa.text("SELECT GET_LOCK(:name, 0)")
        return bool(self._connection.scalar(query, {"name": self.lock_name}) == 1)

    def release(self) -> None:
        self._connection.scalar(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": self.lock_name})

    def close(self) -> None:
        self._connection.close()
        self._engine.dispose()

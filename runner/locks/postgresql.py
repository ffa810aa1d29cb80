"""PostgreSQL: a session-level advisory lock on an autocommit connection of its own."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import URL

from runner import database
from runner.locks import MigrationLock, hashed


class PostgresqlLock(MigrationLock):
    """`pg_try_advisory_lock(key)`; the server frees it when the connection ends."""

    def __init__(self, url: URL, name: str) -> None:
        super().__init__(url, name)
        # Advisory lock keys are one signed 64-bit integer.
        self.key = int.from_bytes(bytes.fromhex(hashed(name, 16)), "big", signed=True)
        self._engine = database.create_engine(url)
        # Autocommit: an idle transaction here would block CREATE INDEX CONCURRENTLY.
        self._connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def try_acquire(self) -> bool:
        query = sa.text("SELECT pg_try_advisory_lock(:key)")
        return bool(self._connection.scalar(query, {"key": self.key}))

    def release(self) -> None:
        self._connection.scalar(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})

    def close(self) -> None:
        self._connection.close()
        self._engine.dispose()

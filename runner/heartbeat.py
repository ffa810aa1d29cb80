"""`migrate.progress`: while an upgrade runs, what the server says about it, every
RUNNER_PROGRESS_INTERVAL seconds, read on the runner's own connection (runner.progress).

A thread beside the upgrade. It knows the revision (Alembic's steps) and the statement
(SQLAlchemy's before_cursor_execute), and asks the server about the upgrade's sessions.
On PostgreSQL no reading runs in the lock's transaction while a CONCURRENTLY statement
runs (such a build would wait for that whole transaction): the statement hook takes the
driver's guard before letting one start, so an in-flight reading ends first, and readings
during it use a connection outside the transaction. A failed reading is skipped: it never
disturbs the migration.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from runner import progress
from runner.drivers import Driver
from runner.log import emit
from runner.stopping import UpgradeStopper


class Heartbeat:
    """Emits `migrate.progress` every `interval` seconds until stopped."""

    def __init__(self, driver: Driver, stopper: UpgradeStopper, steps: Sequence[str],
                 interval: float, started: float) -> None:
        self.driver = driver
        self.stopper = stopper
        self.steps = steps
        self.interval = interval
        self.started = started
        self.statement: str | None = None
        self.concurrently = False
        self._revision_started = time.monotonic()
        self._revision: str | None = None
        self._done = threading.Event()

    def before_execute(self, connection: sa.Connection, cursor: Any, statement: str,
                       *args: Any) -> None:
        """before_cursor_execute: note the statement; a CONCURRENTLY one waits for the
        reading in flight, and none starts in the lock's transaction until it ends."""
        if "CONCURRENTLY" in statement.upper():
            with self.driver.guard:
                self.concurrently = True
        self.statement = statement
        revision = self.steps[-1] if self.steps else None
        if revision != self._revision:
            self._revision, self._revision_started = revision, time.monotonic()

    def after_execute(self, connection: sa.Connection, *args: Any) -> None:
        """after_cursor_execute (and handle_error): the statement is over."""
        self.concurrently = False

    def run(self) -> None:
        """The thread: a reading every interval until the upgrade ends."""
        while not self._done.wait(self.interval):
            self.beat()

    def beat(self) -> None:
        """One reading and its event."""
        revision = self._revision
        now = time.monotonic()
        elapsed, run_elapsed = now - self._revision_started, now - self.started
        reading = None
        try:
            reading = self._read()
        except Exception:
            reading = None
        statement = progress.cut_statement(self.statement)
        text = progress.progress_text(reading, revision or "?", elapsed, run_elapsed)
        fields = reading.fields() if reading is not None else {}
        fields.pop("pid", None)  # a server session id, not the OS process id of a holder
        emit("migrate.progress", text, revision=revision, elapsed=round(elapsed, 3),
             run_elapsed=round(run_elapsed, 3), statement=statement,
             **{key: value for key, value in fields.items() if key != "statement"})

    def _read(self) -> progress.Reading | None:
        ids = self.stopper.server_ids
        if not ids:
            return None
        read = (progress.read_postgresql if self.driver.backend == "postgresql"
                else progress.read_mysql)
        with self.driver.guard:
            outside = self.concurrently
            cursors = self.driver.reading_outside() if outside else self.driver.reading()
            with cursors as cursor:
                return read(cursor, ids)

    def stop(self) -> None:
        self._done.set()


@contextlib.contextmanager
def heartbeat(driver: Driver, stopper: UpgradeStopper, steps: Sequence[str],
              interval: float, started: float) -> Iterator[Heartbeat | None]:
    """`migrate.progress` during the block (interval 0, or SQLite: none)."""
    if interval <= 0 or driver.backend == "sqlite":
        yield None
        return
    beat = Heartbeat(driver, stopper, steps, interval, started)
    listeners = [("before_cursor_execute", beat.before_execute),
                 ("after_cursor_execute", beat.after_execute),
                 ("handle_error", beat.after_execute)]
    for name, function in listeners:
        sa.event.listen(Engine, name, function)
    thread = threading.Thread(target=beat.run, name="runner-progress", daemon=True)
    thread.start()
    try:
        yield beat
    finally:
        beat.stop()
        thread.join()
        for name, function in listeners:
            sa.event.remove(Engine, name, function)

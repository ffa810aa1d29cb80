"""SIGTERM and SIGINT: the handler only records the signal; waits and the upgrade act on it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import NoReturn

from runner.errors import Interrupted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """The first stop signal received, if any; a second one ends the process at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._arrived = threading.Event()

    @property
    def requested(self) -> bool:
        """Whether a stop signal has arrived."""
        return self.signum is not None

    def record(self, signum: int, frame: FrameType | None = None) -> None:
        """The signal handler: remember the signal; on the second one, exit 128 + it now."""
        if self.signum is not None:
            # The operator insists: no safe point is coming soon enough.
            exit_now(128 + signum)
        self.signum = signum
        self._arrived.set()

    def check(self) -> None:
        """A safe point: raise Interrupted if a stop signal has arrived."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    def sleep(self, seconds: float) -> None:
        """Sleep like time.sleep, but raise Interrupted as soon as a stop signal arrives."""
        self.check()
        if self._arrived.wait(seconds):
            self.check()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a stop signal arrives (True) or `timeout` passes (False)."""
        return self._arrived.wait(timeout)

    def reset(self) -> None:
        """Forget any signal: the next one is a first one again."""
        self.signum = None
        self._arrived.clear()


def exit_now(code: int) -> NoReturn:
    """Flush stdout and stderr, then end the process at once, whatever threads still run."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


stop_request = StopRequest()
"""The process's stop request; only `runner.cli.main` installs handlers that fill it."""


def sleep(seconds: float) -> None:
    """The runner's sleep for waits and polls: ends early, raising Interrupted, on a signal."""
    stop_request.sleep(seconds)


@contextlib.contextmanager
def handlers_installed(request: StopRequest = stop_request) -> Iterator[StopRequest]:
    """Route SIGTERM and SIGINT to `request` inside the block; restore the old handlers after.

    The signal reaches `request` through the wakeup fd and a thread of its own: a Python
    handler runs only when the main thread runs Python, not while it waits in a driver
    call (a long SQLite statement), which is when the signal matters most.
    """
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    request.reset()
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    for signum in STOP_SIGNALS:
        # Only so that the C handler writes to the wakeup fd: _forward records it.
        signal.signal(signum, _wake_only)
    forwarder = threading.Thread(target=_forward, args=(reader, request),
                                 name="runner-signals", daemon=True)
    forwarder.start()
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(previous_fd)
        writer.close()
        reader.shutdown(socket.SHUT_RDWR)
        forwarder.join()
        reader.close()


def _wake_only(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: nothing to do, the wakeup fd carries the signal."""


def _forward(reader: socket.socket, request: StopRequest) -> None:
    """Record each stop signal read from the wakeup fd, until the socket closes."""
    with contextlib.suppress(OSError):
        while data := reader.recv(64):
            for signum in data:
                if signum in STOP_SIGNALS:
                    request.record(signum)

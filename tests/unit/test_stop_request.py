"""The stop request: handlers installed only inside the block, a second signal exits at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from runner import signals
from runner.errors import Interrupted


def test_handlers_are_restored_after_the_block() -> None:
    def own(signum: int, frame: object) -> None:
        raise AssertionError("not expected")

    previous = signal.signal(signal.SIGTERM, own)
    try:
        with signals.handlers_installed(signals.StopRequest()):
            assert signal.getsignal(signal.SIGTERM) is not own
        assert signal.getsignal(signal.SIGTERM) is own
        assert signal.set_wakeup_fd(-1) == -1  # no wakeup fd left behind
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_signal_is_recorded_and_ends_a_sleep() -> None:
    request = signals.StopRequest()
    with signals.handlers_installed(request):
        os.kill(os.getpid(), signal.SIGINT)
        assert request.wait(5)
        assert request.signum == signal.SIGINT
        with pytest.raises(Interrupted) as stopped:
            request.sleep(60)
    assert stopped.value.signum == signal.SIGINT


def test_without_handlers_nothing_is_recorded() -> None:
    request = signals.StopRequest()
    request.sleep(0)
    assert not request.requested


def test_a_second_signal_exits_at_once() -> None:
    # A process of its own: the second signal ends it with os._exit.
    code = textwrap.dedent("""
        import os, signal, time
        from runner import signals
        with signals.handlers_installed() as request:
            os.kill(os.getpid(), signal.SIGTERM)
            request.wait(5)
            print("first recorded", flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        print("not reached")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=20, check=False)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert result.stdout == "first recorded\n"

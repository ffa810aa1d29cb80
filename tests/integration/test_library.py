"""The runner as a library: a host app migrates in-process and keeps its process as it was."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

import runner
from support import EXAMPLE, script_heads, scripts, version_rows


@pytest.fixture
def host_logging() -> Iterator[tuple[logging.Handler, io.StringIO]]:
    """A handler on the root logger, as a host app configures its logging."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler, stream
    finally:
        root.removeHandler(handler)


def test_in_process_migrate_leaves_the_host_process_alone(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str,
    host_logging: tuple[logging.Handler, io.StringIO],
) -> None:
    handler, stream = host_logging
    monkeypatch.chdir(EXAMPLE)
    host_logger = logging.getLogger("host.app")
    host_logger.setLevel(logging.INFO)
    signals = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    environment = dict(os.environ)

    settings = runner.load_settings({"app": "app:create_app()", "database_url": sqlite_url})
    runner.wait_for_database(settings)
    result = runner.migrate(settings)

    assert list(result.applied) == [script.revision for script in reversed(
        list(scripts().walk_revisions()))]
    assert version_rows(sqlite_url) == script_heads()
    # env.py's fileConfig() ran: the host's handler, levels and loggers are as they were.
    assert handler in logging.getLogger().handlers
    assert not host_logger.disabled
    host_logger.info("still logging")
    assert "still logging" in stream.getvalue()
    assert {signum: signal.getsignal(signum) for signum in signals} == signals
    assert dict(os.environ) == environment


def test_import_runner_is_cheap() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import runner, sys; print(sorted(name for name in sys.modules"
         " if name.split('.')[0] in ('flask', 'sqlalchemy', 'alembic')))"],
        capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
    assert set(runner.__all__) >= {"load_settings", "migrate", "wait_for_database",
                                   "wait_for_head", "ExitCode", "RunnerError", "ConfigError"}
    assert all(hasattr(runner, name) for name in runner.__all__)

"""Fixtures of the end-to-end suite: the real image, in real containers, with podman.

The session builds the image once through ``tests/e2e/prepare-host.sh``
(which also installs and configures podman and makes the stand-in base
image). Containers use the host's network, each with its own ``PORT``, and
reach this machine's PostgreSQL (127.0.0.1:5432) and MariaDB (127.0.0.1:3306);
each test gets a fresh database, dropped afterwards.

Skipped when no container engine is installed, unless
``RUNNER_REQUIRE_E2E=1`` (CI): then a missing engine, or a host that cannot
be prepared, fails the suite.

Environment: ``RUNNER_E2E_IMAGE`` (default ``localhost/migrate-runner:test``),
``RUNNER_E2E_SKIP_BUILD=1`` to use an image built already,
``TEST_POSTGRESQL_URL`` and ``TEST_MYSQL_URL`` (admin URLs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from e2e_helpers import (
    IMAGE,
    LABEL,
    MARIADB_IMAGE,
    PG_IMAGE,
    PREPARE_HOST,
    REQUIRED,
    ROOT,
    Container,
    Database,
    Host,
    fresh_database,
    podman,
    remove_leftovers,
    unavailable,
)
from support import free_port


@pytest.fixture(scope="session")
def host() -> Iterator[Host]:
    """A prepared host and a freshly built image (once per session)."""
    if shutil.which("podman") is None and not REQUIRED:
        pytest.skip("no container engine (podman) installed; RUNNER_REQUIRE_E2E=1 to require")
    if os.geteuid() != 0 and shutil.which("sudo") is None:
        unavailable("the e2e tests need root, or sudo, for rootful podman")
    env = dict(os.environ, RUNNER_E2E_IMAGE=IMAGE, RUNNER_E2E_PG_IMAGE=PG_IMAGE,
               RUNNER_E2E_MARIADB_IMAGE=MARIADB_IMAGE,
               RUNNER_E2E_PYTHON=sys.executable)
    steps = ["host", "base", "pgimage", "mariadbimage", "compose"]
    if os.environ.get("RUNNER_E2E_SKIP_BUILD") != "1":
        steps.append("image")
    start = time.monotonic()
    result = subprocess.run(["bash", str(PREPARE_HOST), *steps], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=1800)
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        # An engine is installed (or required): a host that cannot be
        # prepared, or an image that does not build, is a failure.
        pytest.fail(f"{PREPARE_HOST.name} {' '.join(steps)} exited {result.returncode}:\n"
                    f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    timings = [line for line in result.stderr.splitlines() if line.startswith("[prepare-host]")]
    print(f"\n[e2e] prepare-host.sh {' '.join(steps)}: {elapsed:.1f} s")
    for line in timings:
        print(f"[e2e]   {line}")
    if shutil.which("podman") is None:
        unavailable("podman is still not installed after prepare-host.sh")
    remove_leftovers()
    yield Host(image=IMAGE, pg_image=PG_IMAGE, mariadb_image=MARIADB_IMAGE,
               build_seconds=elapsed)
    remove_leftovers()


@pytest.fixture(params=["postgresql", "mariadb"])
def database(request: pytest.FixtureRequest) -> Iterator[Database]:
    """A fresh database, on PostgreSQL and on MariaDB."""
    with fresh_database(request.param) as db:
        yield db


@pytest.fixture
def pg_database() -> Iterator[Database]:
    """A fresh PostgreSQL database."""
    with fresh_database("postgresql") as db:
        yield db


@pytest.fixture
def containers(host: Host, request: pytest.FixtureRequest) -> Iterator[Callable[..., Container]]:
    """Start detached containers of the image; removed (logs shown on failure) after."""
    started: list[Container] = []
    test = request.node.name.split("[")[0].removeprefix("test_")[:20].replace("_", "-")

    def start(*args: str, env: dict[str, str] | None = None, port: int | None = None,
              network: str = "host", extra: tuple[str, ...] = ()) -> Container:
        port = port if port is not None else free_port()
        name = f"e2e-{test}-{uuid.uuid4().hex[:6]}"
        environment = {"PORT": str(port), "RUNNER_LOG_FORMAT": "json",
                       "WEB_CONCURRENCY": "2", **(env or {})}
        flags = [f"--network={network}", "--name", name, "--label", f"{LABEL}=1",
                 "--stop-timeout", "10",
                 # no healthcheck timer (it needs systemd, absent here); the
                 # tests run the image's HEALTHCHECK with `podman healthcheck run`
                 "--health-interval", "disable", *extra]
        for key, value in environment.items():
            flags += ["-e", f"{key}={value}"]
        container = Container(name, port)
        started.append(container)
        podman("run", "-d", *flags, host.image, *args)
        return container

    yield start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for container in started:
        if failed:
            print(f"\n----- logs of {container.name} -----\n{container.logs()[-6000:]}")
        podman("rm", "-f", "-t", "0", container.name, check=False)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, for fixtures that show logs on failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report



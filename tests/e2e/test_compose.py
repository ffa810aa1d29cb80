"""docker-compose.yml itself, run with podman-compose: three replicas, exactly one migrates.

Only tests/e2e/compose.override.yml is added, for what cannot exist here
(the official postgres image; the app image is the one the session built).
What podman-compose 1.x with podman 4.3 does differently from Docker Compose:

* ``depends_on: condition: service_healthy`` is ignored (it needs
  ``podman wait --condition=healthy``, podman >= 4.6): the replicas start with
  the database, and the runner's own wait covers it (``db.waiting`` is
  logged while the stand-in initialises);
* healthchecks are not run on a timer without systemd; ``podman
  healthcheck run`` runs one on demand;
* ``deploy.replicas`` counts only with ``deploy.mode: replicated`` written
  out (the compose file does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from e2e_helpers import (
    ROOT,
    Container,
    Host,
    in_parallel,
    parse_events,
    podman,
    stop_and_time,
    wait_until_serving,
)
from support import http_get

pytestmark = pytest.mark.e2e

OVERRIDE = ROOT / "tests" / "e2e" / "compose.override.yml"


class Compose:
    def __init__(self, host: Host) -> None:
        self.project = f"e2e-compose-{uuid.uuid4().hex[:6]}"
        self.env = dict(os.environ, RUNNER_E2E_IMAGE=host.image,
                        RUNNER_E2E_PG_IMAGE=host.pg_image,
                        RUNNER_E2E_MARIADB_IMAGE=host.mariadb_image)

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "podman_compose", "-p", self.project,
                   "-f", str(ROOT / "docker-compose.yml"), "-f", str(OVERRIDE), *args]
        return subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def containers(self, service: str) -> list[str]:
        out = podman("ps", "-a", "--format", "json",
                     "--filter", f"label=com.docker.compose.project={self.project}",
                     "--filter", f"label=com.docker.compose.service={service}").stdout
        return sorted(name for c in json.loads(out or "[]") for name in c["Names"])


@pytest.fixture
def compose(host: Host) -> Iterator[Compose]:
    pytest.importorskip("podman_compose", reason="podman-compose is not installed")
    project = Compose(host)
    try:
        yield project
    finally:
        down = project("--profile", "mariadb", "--profile", "migrate", "down", "-v", "-t", "5")
        assert down.returncode == 0, down.stdout + down.stderr


def host_port(name: str) -> str:
    """127.0.0.1:NNNNN, the ephemeral host address of the container's port 8000."""
    out = podman("port", name, "8000/tcp").stdout.strip().splitlines()
    return out[0].replace("0.0.0.0", "127.0.0.1")


def test_compose_up_three_replicas_one_migrates(host: Host, compose: Compose) -> None:
    start = time.monotonic()
    up = compose("up", "-d", "--no-build")
    assert up.returncode == 0, up.stdout + up.stderr
    print(f"\n[e2e] compose: up -d returned in {time.monotonic() - start:.1f} s")
    if "doesn't support healthy" in up.stderr:
        print("[e2e] compose: podman-compose ignored condition: service_healthy (podman < 4.6)")

    names = compose.containers("app")
    assert len(names) == 3, (names, up.stdout, up.stderr)
    assert len(compose.containers("db")) == 1
    assert compose.containers("migrate") == []  # profile "migrate" not active

    replicas = [Container(name, None) for name in names]
    urls = [f"http://{host_port(name)}/" for name in names]
    waits = in_parallel(lambda pair: wait_until_serving(pair[0], url=pair[1]),
                        list(zip(replicas, urls, strict=True)))
    served = sum(http_get(url)[0] == 200 for url in urls)
    print(f"[e2e] compose: {served}/3 replicas served / on {', '.join(urls)} "
          f"({', '.join(f'{w:.1f}' for w in waits)} s after up)")
    assert served == 3

    per_replica = {c.name: c.event_names() for c in replicas}
    counts = Counter(e for names in per_replica.values() for e in names
                     if e.startswith(("migrate.", "db.waiting")))
    print(f"[e2e] compose: migrate.applied x{counts['migrate.applied']}, "
          f"migrate.noop x{counts['migrate.noop']}, db.waiting x{counts['db.waiting']}")
    assert counts["migrate.applied"] == 1, per_replica
    assert counts["migrate.noop"] == 2, per_replica
    # The URL from DATABASE_URL_FILE and the image's manifest: the others never loaded the app.
    paths = [e.get("path") for c in replicas for e in c.events() if e["event"] == "migrate.noop"]
    assert paths == ["fast", "fast"], paths

    # The URL came from the secret file, and is never logged with its password.
    logs = "".join(c.logs() for c in replicas)
    assert "@db:5432/app" in logs
    assert "example-password-change-me" not in logs
    for container in replicas:
        health = podman("healthcheck", "run", container.name, check=False)
        assert health.returncode == 0, (health.stdout, health.stderr)

    # The one-off migrate service: the database is at head already.
    run = compose("--profile", "migrate", "run", "--rm", "migrate")
    events = [e["event"] for e in parse_events(run.stdout + run.stderr)]
    print(f"[e2e] compose: run --rm migrate: exit {run.returncode}, events {events}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "migrate.noop" in events
    assert [e.get("path") for e in parse_events(run.stdout + run.stderr)
            if e["event"] == "migrate.noop"] == ["fast"], run.stderr[-3000:]

    results = in_parallel(stop_and_time, replicas)
    for container, (code, seconds) in zip(replicas, results, strict=True):
        print(f"[e2e] compose: stop {container.name}: exit {code} in {seconds:.2f} s")
    assert [code for code, _ in results] == [0, 0, 0]


def test_compose_mariadb_profile_swaps_the_database(host: Host, compose: Compose) -> None:
    """`--profile mariadb up mariadb app-mariadb`: MariaDB instead of PostgreSQL."""
    services = compose("--profile", "mariadb", "config", "--services").stdout.split()
    assert {"mariadb", "app-mariadb", "migrate-mariadb"} <= set(services)
    assert set(compose("config", "--services").stdout.split()) == {"db", "app"}

    up = compose("--profile", "mariadb", "up", "-d", "--no-build", "mariadb", "app-mariadb")
    assert up.returncode == 0, up.stdout + up.stderr
    names = compose.containers("app-mariadb")
    assert len(names) == 3, (names, up.stdout, up.stderr)
    assert len(compose.containers("mariadb")) == 1
    # Instead of, not beside, PostgreSQL.
    assert compose.containers("db") == [] and compose.containers("app") == []

    replicas = [Container(name, None) for name in names]
    urls = [f"http://{host_port(name)}/" for name in names]
    waits = in_parallel(lambda pair: wait_until_serving(pair[0], url=pair[1]),
                        list(zip(replicas, urls, strict=True)))
    per_replica = {c.name: c.event_names() for c in replicas}
    counts = Counter(e for names in per_replica.values() for e in names
                     if e.startswith(("migrate.", "db.waiting")))
    print(f"\n[e2e] compose mariadb: 3/3 replicas served "
          f"({', '.join(f'{w:.1f}' for w in waits)} s after up); "
          f"migrate.applied x{counts['migrate.applied']}, migrate.noop x{counts['migrate.noop']}, "
          f"db.waiting x{counts['db.waiting']}")
    assert counts["migrate.applied"] == 1, per_replica
    assert counts["migrate.noop"] == 2, per_replica
    assert "@mariadb:3306/app" in "".join(c.logs() for c in replicas)

    run = compose("--profile", "mariadb", "run", "--rm", "migrate-mariadb")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "migrate.noop" in [e["event"] for e in parse_events(run.stdout + run.stderr)]

    results = in_parallel(stop_and_time, replicas)
    for container, (code, seconds) in zip(replicas, results, strict=True):
        print(f"[e2e] compose mariadb: stop {container.name}: exit {code} in {seconds:.2f} s")
    assert [code for code, _ in results] == [0, 0, 0]

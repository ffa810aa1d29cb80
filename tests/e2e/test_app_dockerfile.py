"""docker/app.Dockerfile, the template for a user's own image, built for a second app.

The build context is tests/apps/packaged_app (a package with an app factory and its own
requirements.txt) plus the wheel built from this checkout, passed as RUNNER_REQUIREMENT.
Two replicas start at once against the PostgreSQL stand-in container, with the URL as
platforms write it (`postgresql://`): exactly one migrates, both serve.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from e2e_helpers import (
    LABEL,
    PREPARE_HOST,
    ROOT,
    Container,
    Host,
    in_parallel,
    podman,
    wait_until_serving,
)
from support import POSTGRESQL_ADMIN, copy_app, free_port, http_get

pytestmark = pytest.mark.e2e

PACKAGED_APP = ROOT / "tests" / "apps" / "packaged_app"
APP_IMAGE = "localhost/migrate-runner-packaged-app:test"
REPLICAS = 2


@pytest.fixture(scope="module")
def app_image(host: Host, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The template built for the packaged app, with this checkout's wheel (once)."""
    context = tmp_path_factory.mktemp("context") / "packaged_app"
    copy_app(PACKAGED_APP, context)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(context), str(ROOT)], check=True, timeout=300)
    wheel = next(context.glob("migrate_runner-*.whl")).name
    machine = subprocess.run(["bash", str(PREPARE_HOST), "build-args"], capture_output=True,
                             text=True, check=True, timeout=120).stdout.split()
    start = time.monotonic()
    podman("build", *machine, "--build-arg", f"RUNNER_REQUIREMENT=./{wheel}",
           "--build-arg", "FLASK_APP=blog:create_app()", "-t", APP_IMAGE,
           "-f", str(ROOT / "docker" / "app.Dockerfile"), str(context), timeout=1800)
    print(f"\n[e2e] build {APP_IMAGE} from docker/app.Dockerfile: "
          f"{time.monotonic() - start:.1f} s")
    return APP_IMAGE


@pytest.fixture
def postgres_container(host: Host) -> Iterator[str]:
    """The PostgreSQL stand-in image on a free port; its URL as a platform writes it."""
    port = free_port()
    name = f"e2e-app-postgres-{uuid.uuid4().hex[:6]}"
    podman("run", "-d", "--network=host", "--name", name, "--label", f"{LABEL}=1",
           "-e", "POSTGRES_USER=app", "-e", "POSTGRES_PASSWORD=app-secret",
           host.pg_image, "postgres", "-c", f"port={port}")
    try:
        admin = sa.engine.make_url(POSTGRESQL_ADMIN).set(
            username="app", password="app-secret", host="127.0.0.1", port=port, database="app")
        engine = sa.create_engine(admin, poolclass=sa.pool.NullPool)
        deadline = time.monotonic() + 60
        while True:
            try:
                with engine.connect():
                    break
            except sa.exc.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        engine.dispose()
        yield f"postgresql://app:app-secret@127.0.0.1:{port}/app"
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)


def test_two_replicas_of_the_template_image(app_image: str, postgres_container: str) -> None:
    def start(_index: int) -> Container:
        container = Container(f"e2e-app-{uuid.uuid4().hex[:6]}", free_port())
        podman("run", "-d", "--network=host", "--name", container.name,
               "--label", f"{LABEL}=1", "--health-interval", "disable",
               "-e", f"PORT={container.port}", "-e", "RUNNER_LOG_FORMAT=json",
               "-e", f"DATABASE_URL={postgres_container}", app_image)
        return container

    replicas = in_parallel(start, list(range(REPLICAS)))
    try:
        in_parallel(wait_until_serving, replicas)
        for container in replicas:
            assert http_get(container.url("/"))[0] == 200
            status, body = http_get(container.url("/readyz"))
            assert status == 200, body
            # gunicorn's own lines are JSON events too (the runner's default config).
            assert "gunicorn.error" in container.event_names(), container.logs()[-3000:]
            assert container.exec("id", "-u").stdout.strip() == "10001"
        counts = Counter(name for container in replicas for name in container.event_names()
                         if name.startswith("migrate."))
        assert counts == Counter({"migrate.applied": 1, "migrate.noop": REPLICAS - 1}), counts
    except BaseException:
        for container in replicas:
            print(f"\n----- logs of {container.name} -----\n{container.logs()[-4000:]}")
        raise
    finally:
        for container in replicas:
            podman("rm", "-f", "-t", "0", container.name, check=False)


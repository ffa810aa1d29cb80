"""docker/app.Dockerfile, the template for a user's own image, built for a second app.

The build context is tests/apps/packaged_app (a package with an app factory and its own
requirements.txt) plus the wheel built from this checkout, passed as RUNNER_REQUIREMENT.
Two replicas start at once against the PostgreSQL stand-in container, with the URL as
platforms write it (`postgresql://`): exactly one migrates, both serve, and the other,
like a later `migrate` at head, decides from the manifest the build's `runner prepare`
wrote, without loading the app. Built a second time with FLASK_APP in a .flaskenv instead
of the build arg: the image then sets no FLASK_APP (which would hide the .flaskenv's), and
its manifest and its starts follow the .flaskenv.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from e2e_helpers import (
    LABEL,
    PREPARE_HOST,
    ROOT,
    Container,
    Host,
    in_parallel,
    parse_events,
    podman,
    wait_until_serving,
)
from support import POSTGRESQL_ADMIN, copy_app, free_port, http_get

pytestmark = pytest.mark.e2e

PACKAGED_APP = ROOT / "tests" / "apps" / "packaged_app"
APP_IMAGE = "localhost/migrate-runner-packaged-app:test"
FLASKENV_IMAGE = "localhost/migrate-runner-packaged-app:flaskenv"
FLASK_APP = "blog:create_app()"
# The template's WORKDIR: `runner prepare` writes the manifest there.
MANIFEST = "/app/.migrate-runner.json"
REPLICAS = 2


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runner's wheel, built from this checkout's files (once), in a copy: setuptools
    builds in the source tree (build/), and what it found there once broke the build
    ("File exists: build/bdist.../dist-info")."""
    source = tmp_path_factory.mktemp("wheel-source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "runner", source / "runner",
                    ignore=shutil.ignore_patterns("__pycache__"))
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(folder), str(source)], check=True, timeout=300)
    return next(folder.glob("migrate_runner-*.whl"))


def build(tag: str, context: Path, wheel: Path, *args: str, flaskenv: str = "") -> str:
    """docker/app.Dockerfile built for the packaged app in `context`, with the wheel (and a
    .flaskenv holding `flaskenv`, if given)."""
    copy_app(PACKAGED_APP, context)
    shutil.copy2(wheel, context / wheel.name)
    if flaskenv:
        (context / ".flaskenv").write_text(flaskenv)
        # `flask` (and so the runner) reads .flaskenv only with python-dotenv installed.
        with (context / "requirements.txt").open("a") as requirements:
            requirements.write("python-dotenv\n")
    machine = subprocess.run(["bash", str(PREPARE_HOST), "build-args"], capture_output=True,
                             text=True, check=True, timeout=120).stdout.split()
    start = time.monotonic()
    podman("build", *machine, "--build-arg", f"RUNNER_REQUIREMENT=./{wheel.name}", *args,
           "-t", tag, "-f", str(ROOT / "docker" / "app.Dockerfile"), str(context),
           timeout=1800)
    print(f"\n[e2e] build {tag} from docker/app.Dockerfile: "
          f"{time.monotonic() - start:.1f} s")
    return tag


@pytest.fixture(scope="module")
def app_image(host: Host, wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The template built for the packaged app, FLASK_APP as a build arg (once)."""
    context = tmp_path_factory.mktemp("context") / "packaged_app"
    return build(APP_IMAGE, context, wheel, "--build-arg", f"FLASK_APP={FLASK_APP}")


@pytest.fixture(scope="module")
def flaskenv_image(host: Host, wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The template built for the packaged app with FLASK_APP in its .flaskenv (once)."""
    context = tmp_path_factory.mktemp("context") / "packaged_app"
    return build(FLASKENV_IMAGE, context, wheel, flaskenv=f"FLASK_APP={FLASK_APP}\n")


def image_env(image: str) -> dict[str, str]:
    config = json.loads(podman("image", "inspect", "--format", "{{json .Config}}",
                               image).stdout)
    return dict(item.split("=", 1) for item in config["Env"])


def read_manifest(image: str) -> dict[str, Any]:
    """The manifest the image ships (with no network: it is only a file)."""
    shown = podman("run", "--rm", "--network=none", "--label", f"{LABEL}=1",
                   "--entrypoint", "python3", image, "-c",
                   "import json, sys; print(json.dumps(json.load(open(sys.argv[1]))))",
                   MANIFEST)
    return dict(json.loads(shown.stdout))


def migrate_once(image: str, url: str, *extra: str) -> list[dict[str, Any]]:
    """`IMAGE migrate` as a one-off job on a read-only root filesystem; its events."""
    result = podman("run", "--rm", "--network=host", "--label", f"{LABEL}=1", "--read-only",
                    "--no-healthcheck", "-e", "RUNNER_LOG_FORMAT=json",
                    "-e", f"DATABASE_URL={url}", *extra, image, "migrate", check=False,
                    timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    return parse_events(result.stdout + result.stderr)


def noop_paths(events: list[dict[str, Any]]) -> list[str | None]:
    return [e.get("path") for e in events if e["event"] == "migrate.noop"]


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
        # The other replica never loaded the app: the manifest told it the head.
        paths = [path for container in replicas for path in noop_paths(container.events())]
        assert paths == ["fast"] * (REPLICAS - 1), paths
        argv = replicas[0].pid1_argv()
        assert argv[-1] == f"runner.wsgi:serve({FLASK_APP!r})", argv
    except BaseException:
        for container in replicas:
            print(f"\n----- logs of {container.name} -----\n{container.logs()[-4000:]}")
        raise
    finally:
        for container in replicas:
            podman("rm", "-f", "-t", "0", container.name, check=False)

    manifest = read_manifest(app_image)
    assert (manifest["cwd"], manifest["app"], manifest["directory"]) == (
        "/app", FLASK_APP, None), manifest
    assert manifest["migrations_directory"] == "/app/migrations", manifest
    assert "/app/blog/views.py" in manifest["files"], sorted(manifest["files"])
    # At head: one query, the app not loaded, on a read-only root filesystem.
    assert noop_paths(migrate_once(app_image, postgres_container)) == ["fast"]
    # Another FLASK_APP than the build's (the same app, written otherwise): the app is
    # loaded, and the answer is the same.
    other = migrate_once(app_image, postgres_container, "-e", "FLASK_APP=blog:create_app")
    assert noop_paths(other) == ["full"], other


def test_flask_app_from_a_flaskenv(flaskenv_image: str, postgres_container: str) -> None:
    """No FLASK_APP build arg: the image sets none, and the .flaskenv names the app."""
    assert "FLASK_APP" not in image_env(flaskenv_image), image_env(flaskenv_image)
    manifest = read_manifest(flaskenv_image)
    assert (manifest["app"], manifest["cwd"]) == (FLASK_APP, "/app"), manifest
    assert "/app/.flaskenv" in manifest["files"], sorted(manifest["files"])
    first = migrate_once(flaskenv_image, postgres_container)
    assert "migrate.applied" in [e["event"] for e in first], first
    assert noop_paths(migrate_once(flaskenv_image, postgres_container)) == ["fast"]

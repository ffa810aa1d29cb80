"""A second app (tests/apps/packaged_app: a package, a factory, `db.Column` models) on
each database: replicas migrate it once, `runner.health` follows its state, and `runner
run` hands it to gunicorn with the package's default config.

The floor-pinned run (`./run.sh test-floor`) runs this module on the oldest supported
versions of every dependency, so it uses nothing the oldest stack lacks.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from support import (
    APPS,
    add_revision,
    cmdline,
    copy_app,
    event_names,
    free_port,
    get,
    run_runner,
    runner_env,
    script_heads,
    start_herd,
    start_runner,
    stop,
    version_rows,
)

PACKAGED_APP = APPS / "packaged_app"
FACTORY = "blog:create_app()"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the packaged app, for tests that add revisions."""
    return copy_app(PACKAGED_APP, tmp_path / "packaged_app")


def env_for(database_url: str, **extra: str) -> dict[str, str]:
    return runner_env(database_url, FLASK_APP=FACTORY, **extra)


@pytest.fixture
def load_app(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], Flask]]:
    """Create the packaged app in this process, from the project's copy, as gunicorn would."""
    monkeypatch.chdir(project)  # Migrate's default directory, "migrations", is relative
    monkeypatch.syspath_prepend(str(project))

    def create(database_url: str) -> Flask:
        monkeypatch.setenv("DATABASE_URL", database_url)
        from blog import create_app

        app: Flask = create_app()
        return app

    yield create
    for name in [name for name in sys.modules if name == "blog" or name.startswith("blog.")]:
        del sys.modules[name]


def test_replicas_migrate_once(database_url: str, project: Path) -> None:
    results = start_herd(database_url, cwd=project, extra_env={"FLASK_APP": FACTORY})
    assert [result.returncode for result in results] == [0] * len(results), [
        result.stderr for result in results]
    counts = Counter(name for result in results for name in event_names(result.stderr)
                     if name.startswith("migrate."))
    assert counts["migrate.applied"] == 1, counts
    assert counts["migrate.noop"] == len(results) - 1, counts
    assert version_rows(database_url) == script_heads(project / "migrations")


def test_readyz_follows_each_database(
    database_url: str, project: Path, load_app: Callable[[str], Flask]
) -> None:
    client = load_app(database_url).test_client()
    assert client.get("/healthz").status_code == 200
    behind = client.get("/readyz")
    assert behind.status_code == 503
    assert behind.get_json()["reason"] == "database not at head"
    assert behind.get_json()["databases"]["default"]["current"] == []

    assert run_runner(["migrate"], env_for(database_url), cwd=project).returncode == 0
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.get_json()
    heads = script_heads(project / "migrations")
    assert ready.get_json()["databases"] == {"default": {"current": heads}}
    assert client.get("/").get_json() == {"notes": 0}

    # A new release ships a revision that is not applied yet: not ready.
    added = add_revision(project, "tags", 'op.create_table("tag", sa.Column("id", sa.Integer,'
                                          ' primary_key=True))')
    shipped = load_app(database_url).test_client()
    pending = shipped.get("/readyz")
    assert pending.status_code == 503
    assert pending.get_json()["reason"] == "database not at head"
    assert pending.get_json()["heads"] == [added]
    # The older release still sees its own head: ready (its scripts were read once).
    assert client.get("/readyz").status_code == 200

    # Migrated by the newer release: the older one is past its head, and stays ready.
    assert run_runner(["migrate"], env_for(database_url), cwd=project).returncode == 0
    assert shipped.get("/readyz").status_code == 200
    ahead = client.get("/readyz")
    assert ahead.status_code == 200, ahead.get_json()
    assert ahead.get_json()["databases"]["default"] == {"current": [added], "ahead": True}


def test_readyz_fails_while_the_database_is_unreachable(
    postgresql_url: str, load_app: Callable[[str], Flask]
) -> None:
    # Port 9 (discard): nothing ever listens there.
    unreachable = sa.engine.make_url(postgresql_url).set(host="127.0.0.1", port=9) \
        .render_as_string(hide_password=False)
    client = load_app(unreachable).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["reason"] == "database unreachable"
    assert response.get_json()["database"] == "default"
    assert client.get("/healthz").status_code == 200


def test_run_serves_with_json_gunicorn_logs(sqlite_url: str, project: Path) -> None:
    """With no gunicorn.conf.py, gunicorn gets the package's config: JSON access lines."""
    port = free_port()
    served = start_runner(["run"], env_for(sqlite_url, PORT=str(port)), cwd=project)
    try:
        deadline = time.monotonic() + 60
        status, body = get(f"http://127.0.0.1:{port}/", deadline)
        assert (status, json.loads(body)) == (200, {"notes": 0})
        argv = cmdline(served.pid)
        assert argv[argv.index("-c") + 1] == "python:runner.gunicorn_config", argv
    finally:
        out, err = stop(served)
    assert served.returncode == 0, err
    access = [json.loads(line) for line in out.splitlines()]
    assert [(line["event"], line["method"], line["path"], line["status"]) for line in access
            ] == [("gunicorn.access", "GET", "/", 200)]
    assert {"ts", "level", "message"} <= set(access[0])
    # Every line on stderr is an event (event_names fails on any other line): the
    # runner's, then gunicorn's own (starting, listening, workers, shutting down).
    names = event_names(err)
    assert names[names.index("serve.exec") + 1:].count("gunicorn.error") >= 3, names


def test_the_apps_own_gunicorn_config_wins(sqlite_url: str, project: Path) -> None:
    """A gunicorn.conf.py in the working directory: no default config, gunicorn reads it."""
    (project / "gunicorn.conf.py").write_text(
        "def when_ready(server):\n    server.log.info('packaged-app-own-config')\n")
    port = free_port()
    served = start_runner(["run"], env_for(sqlite_url, PORT=str(port),
                                           RUNNER_LOG_FORMAT="text"), cwd=project)
    try:
        assert get(f"http://127.0.0.1:{port}/", time.monotonic() + 60)[0] == 200
        argv = cmdline(served.pid)
    finally:
        out, err = stop(served)
    assert "python:runner.gunicorn_config" not in argv, argv
    assert "packaged-app-own-config" in err
    assert '"gunicorn.access"' not in out

"""The built image in real containers: replicas, one-off jobs, signals, a late database.

Figures (timings, counts, exit codes) are printed: run with ``-s`` to see them.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from e2e_helpers import (
    LABEL,
    Container,
    Database,
    Host,
    TcpProxy,
    fresh_database,
    in_parallel,
    parse_events,
    podman,
    run_once,
    stop_and_time,
    wait_until_serving,
)
from support import free_port, http_get

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "example"
REPLICAS = 3
# The image's WORKDIR and FLASK_APP (Dockerfile), with which `runner prepare` ran at build.
WORKDIR = "/app/example"
FLASK_APP = "app:create_app()"
MANIFEST = f"{WORKDIR}/.migrate-runner.json"
# gunicorn's app, as `runner run`/`serve` exec it: runner.wsgi loads FLASK_APP in each worker.
GUNICORN_APP = f"runner.wsgi:serve({FLASK_APP!r})"


def script_heads() -> set[str]:
    config = Config()
    config.set_main_option("script_location", str(EXAMPLE / "migrations"))
    return set(ScriptDirectory.from_config(config).get_heads())


def start_replicas(containers: Callable[..., Container], env: dict[str, str]) -> list[Container]:
    """REPLICAS containers of `runner run`, started at the same moment."""
    return in_parallel(lambda _i: containers(env=env), list(range(REPLICAS)))


def noop_paths(events: list[dict[str, Any]]) -> list[str | None]:
    """The `path` of each migrate.noop: "fast" (the app not loaded) or "full"."""
    return [e.get("path") for e in events if e["event"] == "migrate.noop"]


def check_one_migrated(replicas: list[Container]) -> Counter[str]:
    """Exactly one replica logged migrate.applied, the others migrate.noop without loading
    the app (the image's manifest: they waited for the lock or found the head)."""
    per_replica = {c.name: c.event_names() for c in replicas}
    counts = Counter(
        e for names in per_replica.values() for e in names if e.startswith("migrate.")
    )
    assert counts["migrate.applied"] == 1, per_replica
    assert counts["migrate.noop"] == REPLICAS - 1, per_replica
    assert counts["migrate.failed"] == 0, per_replica
    for name, names in per_replica.items():
        assert "serve.exec" in names, (name, names)
    paths = [path for c in replicas for path in noop_paths(c.events())]
    assert paths == ["fast"] * (REPLICAS - 1), paths
    return counts


def stop_all(replicas: list[Container], label: str) -> list[tuple[int, float]]:
    """podman stop each (at once); all exit 0, gracefully (no SIGKILL)."""
    results = in_parallel(stop_and_time, replicas)
    for container, (code, seconds) in zip(replicas, results, strict=True):
        print(f"[e2e] {label}: stop {container.name}: exit {code} in {seconds:.2f} s")
    assert [code for code, _ in results] == [0] * len(replicas), results
    return results


def test_replicas_migrate_once_and_serve(
    host: Host, containers: Callable[..., Container], database: Database
) -> None:
    """3 replicas at once on an empty database: all serve, exactly one migrates."""
    label = f"replicas/{database.backend}"
    start = time.monotonic()
    replicas = start_replicas(containers, {"DATABASE_URL": database.url})
    waits = in_parallel(wait_until_serving, replicas)
    served = sum(http_get(c.url("/"))[0] == 200 for c in replicas)
    print(f"\n[e2e] {label}: {served}/{REPLICAS} replicas served / (HTTP 200), "
          f"all within {time.monotonic() - start:.1f} s of starting "
          f"({', '.join(f'{w:.1f}' for w in waits)} s)")
    assert served == REPLICAS

    counts = check_one_migrated(replicas)
    print(f"[e2e] {label}: migrate.applied x{counts['migrate.applied']}, "
          f"migrate.noop x{counts['migrate.noop']}")
    applied = next(e for c in replicas for e in c.events() if e["event"] == "migrate.applied")
    print(f"[e2e] {label}: applied {applied.get('revisions')} in {applied.get('elapsed')} s")
    assert {"user", "post", "more_user_info", "alembic_version"} <= database.tables()
    assert {row[0] for row in database.query("SELECT version_num FROM alembic_version")} \
        == script_heads()

    for container in replicas:
        # gunicorn is PID 1: the runner exec'd it, no shell in between.
        argv = container.pid1_argv()
        assert any(Path(arg).name == "gunicorn" for arg in argv[:2]), argv
        # on the app as runner.wsgi loads it in each worker (the runner never loaded it)
        assert argv[-1] == GUNICORN_APP, argv
        # not root
        uid = container.exec("id", "-u").stdout.strip()
        assert uid != "0", uid
        status, body = http_get(container.url("/readyz"))
        assert status == 200, body
        # The image's HEALTHCHECK (python3 urllib on /healthz, PORT honoured).
        health = podman("healthcheck", "run", container.name, check=False)
        assert health.returncode == 0, (health.stdout, health.stderr)
    top = podman("top", replicas[0].name, "pid", "user", "args").stdout
    print(f"[e2e] {label}: PID 1 = {' '.join(replicas[0].pid1_argv())!r}; uid "
          f"{replicas[0].exec('id', '-u').stdout.strip()}; podman top:\n{top.rstrip()}")

    stop_all(replicas, label)


def test_database_late_replicas_wait_then_serve(
    host: Host, containers: Callable[..., Container], pg_database: Database
) -> None:
    """The database is down when the replicas start and up 5 s later: they wait, then serve."""
    port = free_port()
    proxy = TcpProxy(port, ("127.0.0.1", 5432))
    env = {"DATABASE_URL": pg_database.url_on("127.0.0.1", port), "RUNNER_WAIT_TIMEOUT": "90"}
    try:
        replicas = start_replicas(containers, env)
        time.sleep(5)
        for container in replicas:  # still waiting, none gave up
            assert container.state()["Running"], container.logs()
        up_at = time.monotonic()
        proxy.start()
        waits = in_parallel(wait_until_serving, replicas)
        print(f"\n[e2e] late database: up after 5 s; replicas served "
              f"{', '.join(f'{w:.1f}' for w in waits)} s later "
              f"(through the proxy: {proxy.connections} connections)")
        for container in replicas:
            names = container.event_names()
            assert "db.waiting" in names, (container.name, names)
            assert names.index("db.waiting") < names.index("db.ready"), names
        waiting = [sum(n == "db.waiting" for n in c.event_names()) for c in replicas]
        print(f"[e2e] late database: db.waiting events per replica {waiting}")
        counts = check_one_migrated(replicas)
        print(f"[e2e] late database: migrate.applied x{counts['migrate.applied']}, "
              f"migrate.noop x{counts['migrate.noop']}, "
              f"{time.monotonic() - up_at:.1f} s from database up to all serving")
        stop_all(replicas, "late database")
    finally:
        proxy.stop()


def test_migrate_one_off(host: Host, database: Database) -> None:
    """`IMAGE migrate` as a one-off job: exits 0, database at head; check/status agree."""
    env = {"DATABASE_URL": database.url}
    start = time.monotonic()
    result = run_once(host, "migrate", env=env)
    seconds = time.monotonic() - start
    print(f"\n[e2e] migrate one-off/{database.backend}: exit {result.returncode} "
          f"in {seconds:.1f} s")
    assert result.returncode == 0, result.stdout + result.stderr
    events = [e["event"] for e in parse_events(result.stdout + result.stderr)]
    assert "migrate.applied" in events, events
    current = {row[0] for row in database.query("SELECT version_num FROM alembic_version")}
    assert current == script_heads()

    # At head, the image's manifest tells so with one query, without loading the app, on
    # a read-only root filesystem too (Kubernetes): the manifest is only read.
    again = run_once(host, "migrate", env=env, extra=("--read-only",))
    assert again.returncode == 0, again.stdout + again.stderr
    assert noop_paths(parse_events(again.stdout + again.stderr)) == ["fast"], again.stderr

    check = run_once(host, "check", env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    status = run_once(host, "status", "--json", env={**env, "RUNNER_LOG_FORMAT": "text"})
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert set(report["current"]) == set(report["heads"]) == script_heads(), report
    assert report["pending"] == [], report


def test_image_ships_the_manifest(host: Host, pg_database: Database) -> None:
    """`runner prepare` ran at build, in the WORKDIR, with the image's FLASK_APP and no
    RUNNER_MIGRATIONS_DIR; starts that differ from it load the app, and still decide."""
    config = json.loads(podman("image", "inspect", "--format", "{{json .Config}}",
                               host.image).stdout)
    assert config["WorkingDir"] == WORKDIR, config["WorkingDir"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env.get("FLASK_APP") == FLASK_APP, env
    assert "RUNNER_MIGRATIONS_DIR" not in env, env
    shown = podman("run", "--rm", "--network=none", "--label", f"{LABEL}=1",
                   "--entrypoint", "python3", host.image, "-c",
                   "import json, os, sys; path = sys.argv[1]; stat = os.stat(path); "
                   "print(json.dumps({'manifest': json.load(open(path)), 'uid': stat.st_uid, "
                   "'writable': os.access(path, os.W_OK)}))", MANIFEST)
    found = json.loads(shown.stdout)
    manifest = found["manifest"]
    assert (manifest["cwd"], manifest["app"], manifest["directory"]) == (
        WORKDIR, FLASK_APP, None), manifest
    assert manifest["migrations_directory"] == f"{WORKDIR}/migrations", manifest
    assert set(manifest["heads"]) == script_heads(), manifest
    assert f"{WORKDIR}/app.py" in manifest["files"], sorted(manifest["files"])
    # root's, read-only to the app's user: a start never rewrites it
    assert (found["uid"], found["writable"]) == (0, False), found

    url = {"DATABASE_URL": pg_database.url}
    first = run_once(host, "migrate", env=url)
    assert first.returncode == 0, first.stdout + first.stderr
    timings = {}
    for label, extra_env in (("manifest", {}),
                             ("RUNNER_MIGRATIONS_DIR", {
                                 "RUNNER_MIGRATIONS_DIR": f"{WORKDIR}/migrations"})):
        start = time.monotonic()
        result = run_once(host, "migrate", env={**url, **extra_env})
        timings[label] = time.monotonic() - start
        assert result.returncode == 0, result.stdout + result.stderr
        expected = "fast" if label == "manifest" else "full"
        assert noop_paths(parse_events(result.stdout + result.stderr)) == [expected], (
            label, result.stderr[-3000:])
    print(f"\n[e2e] manifest {MANIFEST}: heads {manifest['heads']}, "
          f"{len(manifest['files'])} files; migrate at head: path fast "
          f"{timings['manifest']:.1f} s, with RUNNER_MIGRATIONS_DIR set (path full) "
          f"{timings['RUNNER_MIGRATIONS_DIR']:.1f} s (podman run included)")


def test_second_database_sets_the_manifest_aside(host: Host, pg_database: Database) -> None:
    """EXAMPLE_SECOND_DATABASE_URL makes the example use migrations_multidb/, which the
    build's manifest does not know: with RUNNER_MIGRATIONS_DIR naming that directory (as
    the Dockerfile says), every start loads the app and sees both databases at head."""
    with fresh_database("postgresql") as audit:
        env = {"DATABASE_URL": pg_database.url, "EXAMPLE_SECOND_DATABASE_URL": audit.url,
               "RUNNER_MIGRATIONS_DIR": f"{WORKDIR}/migrations_multidb"}
        outcomes = []
        for _ in range(2):
            result = run_once(host, "migrate", env=env)
            assert result.returncode == 0, result.stdout + result.stderr
            outcomes.append([(e["event"], e.get("path")) for e in parse_events(
                result.stdout + result.stderr) if e["event"].startswith("migrate.")])
        assert outcomes == [[("migrate.applied", None)], [("migrate.noop", "full")]], outcomes
        assert "audit_event" in audit.tables()


def test_check_before_migrating_exits_5(host: Host, pg_database: Database) -> None:
    result = run_once(host, "check", env={"DATABASE_URL": pg_database.url})
    assert result.returncode == 5, result.stdout + result.stderr


def test_sql_offline_without_a_database(host: Host) -> None:
    """`IMAGE sql` renders the migrations' SQL with no database and no network at all."""
    closed = free_port()
    for url in (f"postgresql+psycopg://app:secret@127.0.0.1:{closed}/app",
                f"mysql+pymysql://app:secret@127.0.0.1:{closed}/app"):
        result = run_once(host, "sql", env={"DATABASE_URL": url, "RUNNER_LOG_FORMAT": "text"},
                          network="none")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "CREATE TABLE" in result.stdout, result.stdout[-2000:]
        assert "secret" not in result.stdout + result.stderr
        print(f"\n[e2e] sql ({url.split(':')[0]}): exit 0, "
              f"{result.stdout.count('CREATE TABLE')} CREATE TABLE statements")


def test_default_sqlite_in_the_instance_folder(
    host: Host, containers: Callable[..., Container]
) -> None:
    """No DATABASE_URL: the app's SQLite file in example/instance/, writable by the app user."""
    container = containers(env={"WEB_CONCURRENCY": "1"})
    wait_until_serving(container)
    assert "migrate.applied" in container.event_names()
    listing = container.exec("ls", "-ln", "/app/example/instance").stdout
    assert "example.db" in listing, listing
    # The code is not writable by the app user.
    probe = container.exec("touch", "/app/example/app.py", check=False)
    assert probe.returncode != 0
    code, seconds = stop_and_time(container)
    print(f"\n[e2e] sqlite default: served; stop exit {code} in {seconds:.2f} s")
    assert code == 0


"""Benchmark: every ratio of the performance goals, printed in one run; it asserts nothing.

Run: .venv/bin/python tests/benchmark.py [--trials N] [--sections cpu,herd,scale,http,connections]
[--databases postgresql,mysql,sqlite] [--revisions 1000] [--naive]

- cpu: paired CPU time (user+sys of the child, from os.wait4), median over the trials, each
  command alternating with `flask db upgrade` on a database at head: `runner migrate` and
  `runner check` with RUNNER_MIGRATIONS_DIR (the fast start) and without it (the app is
  loaded), the fast path's decision alone, the raw floor (python + driver +
  `SELECT version_num`) and `python -c 'import flask_migrate'`.
- herd: 8 `runner migrate` at once against 1 alone on an empty PostgreSQL database (wall
  time, failures, how many applied); `--naive` adds 8 `flask db upgrade` at once.
- scale: `check`/`status` at 10 against 1,000 revisions, `sql` against
  `flask db upgrade --sql` at 1,000 (a linear history of trivial revisions).
- http: time to the first HTTP 200 from `runner run` against
  `flask db upgrade && exec gunicorn`, on a database at head.
- connections: herds of 8, 32 and 100 `runner migrate` on an empty PostgreSQL database with
  a 3 s revision (so that waiters pile up): the peak of connections to the database per
  replica (sampled from pg_stat_activity) and the wall time against the 8-replica herd.

Timings go here, never into the tests, so no test is flaky on a busy machine; paired ratios
stay meaningful when the machine is busy, absolute seconds do not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from support import (
    ADMIN_URLS,
    EXAMPLE,
    add_revision,
    copy_app,
    free_port,
    fresh_database,
    peak_connections,
    runner_command,
    runner_env,
    script_heads,
)

REPLICAS = 8
PYTHON = sys.executable
FLASK_UPGRADE = [PYTHON, "-m", "flask", "db", "upgrade"]
KINDS = ("postgresql", "mysql", "sqlite")


def cpu_seconds(command: Sequence[str], env: dict[str, str], cwd: Path) -> float:
    """Run a command to completion; its CPU time (user + sys), children included."""
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0, 5):  # check exits 5 when not at head: still a reading
        print(f"  ! {' '.join(command[-3:])} exited {process.returncode}", file=sys.stderr)
    return usage.ru_utime + usage.ru_stime


def paired(
    baseline: Callable[[], float], candidates: dict[str, Callable[[], float]], trials: int
) -> tuple[float, dict[str, tuple[float, float]]]:
    """Median baseline seconds, and per candidate its median seconds and median paired ratio."""
    base_runs: list[float] = []
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in candidates}
    for trial in range(trials):
        for name, candidate in candidates.items():
            # Alternate which goes first, so neither always finds a warmer cache.
            if trial % 2:
                seconds, base = candidate(), baseline()
            else:
                base, seconds = baseline(), candidate()
            base_runs.append(base)
            runs[name].append((seconds, seconds / base))
    return statistics.median(base_runs), {
        name: (statistics.median(s for s, _ in pairs), statistics.median(r for _, r in pairs))
        for name, pairs in runs.items()
    }


@contextlib.contextmanager
def database(kind: str, directory: Path) -> Iterator[str]:
    """An empty database of `kind`; SQLite as an absolute file in `directory`."""
    if kind == "sqlite":
        path = directory / f"bench-{time.monotonic_ns()}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            path.unlink(missing_ok=True)
    else:
        with fresh_database(kind) as url:
            yield url


def migrate(url: str, cwd: Path = EXAMPLE, timeout: float = 1800) -> None:
    result = subprocess.run(runner_command("migrate"), env=runner_env(url), cwd=cwd,
                            capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise SystemExit(f"runner migrate failed:\n{result.stderr[-2000:]}")


def raw_floor_command(url: str) -> list[str]:
    """python + the bare driver + SELECT version_num, nothing else (not even the runner)."""
    from runner.fastpath import parse_url

    target = parse_url(url)
    assert target is not None, url
    module = {"postgresql": "psycopg", "mysql": "pymysql", "mariadb": "pymysql",
              "sqlite": "sqlite3"}[target.backend]
    connect = "sqlite3.connect(p['path'])" if module == "sqlite3" else f"{module}.connect(**p)"
    code = (f"import json, sys, {module}; p = json.loads(sys.argv[1]); c = {connect};"
            " k = c.cursor(); k.execute('SELECT version_num FROM alembic_version');"
            " k.fetchall(); c.close()")
    return [PYTHON, "-c", code, json.dumps(dict(target.params))]


def fast_decision_command(url: str, migrations: Path) -> list[str]:
    code = ("import sys; from pathlib import Path; from runner.fastpath import fast_at_head;"
            " sys.exit(0 if fast_at_head(sys.argv[1], Path(sys.argv[2])) else 5)")
    return [PYTHON, "-c", code, url, str(migrations)]


def section_cpu(kinds: Sequence[str], trials: int, scratch: Path) -> None:
    print(f"\n== CPU at head: paired against `flask db upgrade`, median of {trials} ==")
    for kind in kinds:
        with database(kind, scratch) as url:
            migrate(url)
            env = runner_env(url)
            # The migrations directory known without the app: the fast start.
            fast = runner_env(url, RUNNER_MIGRATIONS_DIR="migrations")

            def run(command: Sequence[str], env: dict[str, str] = env) -> Callable[[], float]:
                return lambda: cpu_seconds(command, env, EXAMPLE)

            base, results = paired(run(FLASK_UPGRADE), {
                "runner migrate (fast start)": run(runner_command("migrate"), fast),
                "runner check (fast start)": run(runner_command("check"), fast),
                "runner migrate (app loaded)": run(runner_command("migrate")),
                "runner check (app loaded)": run(runner_command("check")),
                "fast decision alone": run(fast_decision_command(url, EXAMPLE / "migrations")),
                "raw floor (driver + select)": run(raw_floor_command(url)),
                "python -c 'import flask_migrate'": run([PYTHON, "-c", "import flask_migrate"]),
            }, trials)
        print(f"{kind}: flask db upgrade {base:.3f}s CPU")
        for name, (seconds, ratio) in results.items():
            print(f"  {name:34} {seconds:6.3f}s  {ratio:5.2f}x")


def herd(command: Sequence[str], url: str, replicas: int) -> tuple[int, str, float]:
    """Start `replicas` copies at once; how many failed, how many applied, the wall time."""
    env = runner_env(url, RUNNER_MIGRATIONS_DIR="migrations")  # as the image sets it
    started = time.monotonic()
    processes = [subprocess.Popen(command, env=env, cwd=EXAMPLE, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for _ in range(replicas)]
    outputs = [process.communicate()[1] for process in processes]
    wall = time.monotonic() - started
    failed = sum(process.returncode != 0 for process in processes)
    if command[-2:] == ["db", "upgrade"]:
        return failed, "?", wall  # flask db upgrade does not say whether it applied anything
    applied = sum('"event": "migrate.applied"' in output for output in outputs)
    return failed, str(applied), wall


def section_herd(trials: int, naive: bool) -> None:
    print(f"\n== Herd on an empty PostgreSQL database, {trials} trials ==")
    shapes = [("1 runner migrate", runner_command("migrate"), 1),
              (f"{REPLICAS} runner migrate", runner_command("migrate"), REPLICAS)]
    if naive:
        shapes.append((f"{REPLICAS} flask db upgrade", FLASK_UPGRADE, REPLICAS))
    walls: dict[str, list[float]] = {label: [] for label, _, _ in shapes}
    for _ in range(trials):
        for label, command, replicas in shapes:
            with fresh_database("postgresql") as url:
                failed, applied, wall = herd(command, url, replicas)
            walls[label].append(wall)
            print(f"  {label:22} wall {wall:6.2f}s  failed {failed}  applied {applied}")
    single = statistics.median(walls["1 runner migrate"])
    for label, runs in walls.items():
        print(f"{label:24} median wall {statistics.median(runs):6.2f}s"
              f"  {statistics.median(runs) / single:5.2f}x one replica")


def linear_project(scratch: Path, revisions: int) -> Path:
    """A copy of the example whose history goes on, linearly, to `revisions` revisions."""
    project = scratch / f"project-{revisions}"
    copy_app(EXAMPLE, project)
    versions = project / "migrations" / "versions"
    down = script_heads()[0]
    for index in range(revisions - len(list(versions.glob("*.py")))):
        revision = f"{index:04d}bench{index:04d}"
        (versions / f"{revision}_step.py").write_text(
            f'"""step {index}"""\nfrom alembic import op\nimport sqlalchemy as sa\n\n'
            f"revision = {revision!r}\ndown_revision = {down!r}\nbranch_labels = None\n"
            "depends_on = None\n\n\ndef upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n"
        )
        down = revision
    return project


def section_scale(trials: int, revisions: int, scratch: Path) -> None:
    print(f"\n== 10 against {revisions} revisions (PostgreSQL), median of {trials} ==")
    small, large = linear_project(scratch, 10), linear_project(scratch, revisions)
    with fresh_database("postgresql") as small_url, fresh_database("postgresql") as large_url:
        migrate(small_url, small)
        migrate(large_url, large)
        for command in ("check", "status"):
            def timed(project: Path, url: str, command: str = command) -> Callable[[], float]:
                return lambda: cpu_seconds(runner_command(command), runner_env(url), project)

            base, results = paired(timed(small, small_url),
                                   {command: timed(large, large_url)}, trials)
            seconds, ratio = results[command]
            print(f"runner {command:7} 10: {base:.3f}s  {revisions}: {seconds:.3f}s"
                  f"  {ratio:5.2f}x")
        offline_env = runner_env(large_url)
        base, results = paired(
            lambda: cpu_seconds([*FLASK_UPGRADE, "--sql"], offline_env, large),
            {"runner sql": lambda: cpu_seconds(runner_command("sql"), offline_env, large)},
            trials,
        )
        seconds, ratio = results["runner sql"]
        print(f"runner sql at {revisions}: {seconds:.3f}s against flask db upgrade --sql"
              f" {base:.3f}s  {ratio:5.2f}x")


def first_200(command: Sequence[str], url: str) -> float:
    """Seconds from start until GET /healthz answers 200; the server is stopped after."""
    port = free_port()
    env = runner_env(url, PORT=str(port), WEB_CONCURRENCY="1")
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, cwd=EXAMPLE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while time.monotonic() - started < 120:
            with contextlib.suppress(OSError, urllib.error.URLError), urllib.request.urlopen(
                f"http://127.0.0.1:{port}/healthz", timeout=2
            ) as response:
                if response.status == 200:
                    return time.monotonic() - started
            if process.poll() is not None:
                raise SystemExit(f"{command} exited {process.returncode} before serving")
            time.sleep(0.02)
        raise SystemExit(f"{command} did not serve within 120 s")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def section_http(trials: int, kinds: Sequence[str], scratch: Path) -> None:
    print(f"\n== Time to the first HTTP 200 on a database at head, median of {trials} ==")
    naive = ["sh", "-c", f"{PYTHON} -m flask db upgrade && exec {PYTHON} -m gunicorn"
             " 'app:create_app()'"]
    for kind in kinds:
        with database(kind, scratch) as url:
            migrate(url)
            base, results = paired(lambda url=url: first_200(naive, url),  # type: ignore[misc]
                                   {"runner run": lambda url=url: first_200(  # type: ignore[misc]
                                       runner_command("run"), url)}, trials)
        seconds, ratio = results["runner run"]
        print(f"{kind}: runner run {seconds:.2f}s, flask db upgrade && exec gunicorn"
              f" {base:.2f}s  {ratio:5.2f}x")


def section_connections(trials: int, scratch: Path) -> None:
    print(f"\n== Connections and wall of a herd with a 3 s revision (PostgreSQL), {trials}"
          " trials ==")
    project = scratch / "connections"
    copy_app(EXAMPLE, project)
    add_revision(project, "slow", 'op.execute("SELECT pg_sleep(3)")')
    walls: dict[int, list[float]] = {}
    for replicas in (8, 32, 100):
        for _ in range(trials):
            with fresh_database("postgresql") as url:
                name = url.rsplit("/", 1)[1]
                env = runner_env(url, RUNNER_WAIT_TIMEOUT="300")
                started = time.monotonic()
                with peak_connections(ADMIN_URLS["postgresql"], name) as peak:
                    processes = [subprocess.Popen(runner_command("migrate"), env=env,
                                                  cwd=project, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.PIPE, text=True)
                                 for _ in range(replicas)]
                    outputs = [process.communicate()[1] for process in processes]
                wall = time.monotonic() - started
            walls.setdefault(replicas, []).append(wall)
            failed = sum(process.returncode != 0 for process in processes)
            applied = sum('"event": "migrate.applied"' in output for output in outputs)
            print(f"  {replicas:3} replicas: peak {peak[0]:3} connections"
                  f" ({peak[0] / replicas:.2f} per replica), wall {wall:6.2f}s,"
                  f" failed {failed}, applied {applied}")
    eight = statistics.median(walls[8])
    for replicas, runs in walls.items():
        print(f"{replicas:3} replicas median wall {statistics.median(runs):6.2f}s"
              f"  {statistics.median(runs) / eight:5.2f}x the 8-replica herd"
              f" ({replicas / 8:.1f}x the replicas)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--sections", default="cpu,herd,scale,http,connections")
    parser.add_argument("--databases", default=",".join(KINDS))
    parser.add_argument("--revisions", type=int, default=1000)
    parser.add_argument("--naive", action="store_true",
                        help="also run the naive herd: 8 `flask db upgrade` at once")
    args = parser.parse_args()
    sections = args.sections.split(",")
    kinds = [kind for kind in args.databases.split(",") if kind in KINDS]
    print(f"benchmark {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {os.uname().nodename},"
          f" {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        if "cpu" in sections:
            section_cpu(kinds, args.trials, scratch)
        if "herd" in sections:
            section_herd(args.trials, args.naive)
        if "scale" in sections:
            section_scale(args.trials, args.revisions, scratch)
        if "http" in sections:
            section_http(args.trials, kinds, scratch)
        if "connections" in sections:
            section_connections(args.trials, scratch)


if __name__ == "__main__":
    main()

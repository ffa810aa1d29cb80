"""Benchmark: every ratio of the performance goals, printed in one run; it asserts nothing.

Run: .venv/bin/python tests/benchmark.py [--trials N] [--sections cpu,herd,scale,http,connections]
[--databases postgresql,mysql,sqlite] [--revisions 1000] [--naive] [--runner-python PYTHON]

Each start is measured in the setups a user may have:
- plain: only DATABASE_URL and FLASK_APP (no manifest, no migrations directory setting);
- prepared: `runner prepare` has run (as the image template does) in a copy of the project;
- directory: RUNNER_MIGRATIONS_DIR set (the old fast start: a plain start for a runner
  that has `runner prepare`).
A setup the runner under test lacks (`prepare`, for an older runner) is left out.

- cpu: paired CPU time (user+sys of the child, from os.wait4), median over the trials, each
  command alternating with `flask db upgrade` on a database at head; the prepared start
  also with the env.py of Flask-Migrate 2.0 and 3.1 (tests/apps/env_py), and the raw floor
  (python + driver + `SELECT version_num`).
- herd: 8 `runner migrate` at once against 1 alone on an empty PostgreSQL and MariaDB
  database (wall time, failures, how many applied); `--naive` adds 8 `flask db upgrade`.
- scale: `check`/`status` at 10 against 1,000 revisions, `sql` against
  `flask db upgrade --sql` at 1,000, and `lint --offline` against `sql` at 1,000.
- http: time to the first HTTP 200 from `runner run` on a database at head, against
  `flask db upgrade && exec gunicorn` and against bare gunicorn.
- connections: herds of 8, 32 and 100 `runner migrate` on an empty PostgreSQL database with
  a 3 s revision: the peak of connections per replica, the wall time against the 8-replica
  herd, and the new server sessions each waiting replica opened per minute.

`--runner-python` runs the runner (and flask, and the example app) with another
interpreter, such as an older checkout's virtualenv, so that the same benchmark measures
before and after. Timings go here, never into the tests, so no test is flaky on a busy
machine; paired ratios stay meaningful when the machine is busy, absolute seconds do not.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
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

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))
from support import (
    ADMIN_URLS,
    EXAMPLE,
    REPO,
    add_revision,
    copy_app,
    free_port,
    fresh_database,
    peak_connections,
    runner_env,
    script_heads,
)

REPLICAS = 8
KINDS = ("postgresql", "mysql", "sqlite")
ENV_PY = REPO / "tests" / "apps" / "env_py"
PYTHON = sys.executable
"""The interpreter that runs the runner, flask and gunicorn (--runner-python)."""


def runner(*args: str) -> list[str]:
    return [PYTHON, "-m", "runner", *args]


def flask_upgrade(*args: str) -> list[str]:
    return [PYTHON, "-m", "flask", "db", "upgrade", *args]


def has_prepare() -> bool:
    """Whether the runner under test has `runner prepare` (the manifest)."""
    # Not from the checkout's root, whose runner/ `python -m` would import instead.
    result = subprocess.run(runner("prepare", "--help"), cwd=EXAMPLE, capture_output=True,
                            check=False)
    return result.returncode == 0


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


def run_ok(command: Sequence[str], env: dict[str, str], cwd: Path) -> None:
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True,
                            timeout=1800, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")


def setups(url: str, scratch: Path, project: Path = EXAMPLE, name: str = "example"
           ) -> dict[str, tuple[Path, dict[str, str]]]:
    """The setups of the runner under test: (working directory, environment) each."""
    plain = runner_env(url)
    found = {"plain": (project, plain),
             "directory": (project, runner_env(url, RUNNER_MIGRATIONS_DIR="migrations"))}
    if has_prepare():
        prepared = copy_app(project, scratch / f"prepared-{name}-{time.monotonic_ns()}")
        run_ok(runner("prepare"), plain, prepared)
        found["prepared"] = (prepared, plain)
    return found


def with_env_py(scratch: Path, source: Path) -> Path:
    """A copy of the example whose migrations/env.py is `source` (another Flask-Migrate's)."""
    project = copy_app(EXAMPLE, scratch / f"env-{source.stem}-{time.monotonic_ns()}")
    shutil.copy(source, project / "migrations" / "env.py")
    return project


def raw_floor_command(url: str) -> list[str]:
    """python + the bare driver + SELECT version_num, nothing else (not even the runner)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        code = (f"import sqlite3; c = sqlite3.connect({parsed.database!r}); k = c.cursor();"
                " k.execute('SELECT version_num FROM alembic_version'); k.fetchall()")
    else:
        module = "psycopg" if parsed.get_backend_name() == "postgresql" else "pymysql"
        key = "dbname" if module == "psycopg" else "database"
        params = {"host": parsed.host, "port": parsed.port, "user": parsed.username,
                  key: parsed.database}
        code = (f"import {module}; c = {module}.connect(**{params!r}); k = c.cursor();"
                " k.execute('SELECT version_num FROM alembic_version'); k.fetchall(); c.close()")
    return [PYTHON, "-c", code]


def section_cpu(kinds: Sequence[str], trials: int, scratch: Path) -> None:
    print(f"\n== CPU at head: paired against `flask db upgrade`, median of {trials} ==")
    for kind in kinds:
        with database(kind, scratch) as url:
            run_ok(runner("migrate"), runner_env(url), EXAMPLE)

            def run(command: Sequence[str], cwd: Path = EXAMPLE,
                    env: dict[str, str] | None = None) -> Callable[[], float]:
                return lambda: cpu_seconds(command, env or runner_env(url), cwd)

            candidates: dict[str, Callable[[], float]] = {}
            for setup, (cwd, env) in setups(url, scratch).items():
                for command in ("migrate", "check"):
                    candidates[f"runner {command} ({setup})"] = run(runner(command), cwd, env)
            if has_prepare():
                for source in sorted(ENV_PY.glob("*.py")):
                    (cwd, env), = [found for name, found in setups(
                        url, scratch, with_env_py(scratch, source), source.stem).items()
                        if name == "prepared"]
                    candidates[f"runner migrate (prepared, {source.stem} env.py)"] = run(
                        runner("migrate"), cwd, env)
            candidates["raw floor (driver + select)"] = run(raw_floor_command(url))
            candidates["python -c 'import flask_migrate'"] = run(
                [PYTHON, "-c", "import flask_migrate"])
            base, results = paired(run(flask_upgrade()), candidates, trials)
        print(f"{kind}: flask db upgrade {base:.3f}s CPU")
        for name, (seconds, ratio) in results.items():
            print(f"  {name:52} {seconds:6.3f}s  {ratio:5.2f}x")


def herd(command: Sequence[str], env: dict[str, str], cwd: Path, replicas: int
         ) -> tuple[int, str, float]:
    """Start `replicas` copies at once; how many failed, how many applied, the wall time."""
    started = time.monotonic()
    processes = [subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for _ in range(replicas)]
    outputs = [process.communicate()[1] for process in processes]
    wall = time.monotonic() - started
    failed = sum(process.returncode != 0 for process in processes)
    if "flask" in command:
        return failed, "?", wall  # flask db upgrade does not say whether it applied anything
    applied = sum('"event": "migrate.applied"' in output for output in outputs)
    return failed, str(applied), wall


def section_herd(kinds: Sequence[str], trials: int, naive: bool, scratch: Path) -> None:
    for kind in [kind for kind in kinds if kind != "sqlite"]:
        print(f"\n== Herd on an empty {kind} database, {trials} trials ==")
        with database(kind, scratch) as url:
            found = setups(url, scratch)
        shapes = [(f"{replicas} runner migrate ({setup})", runner("migrate"), setup, replicas)
                  for setup in found if setup != "directory" or "prepared" not in found
                  for replicas in (1, REPLICAS)]
        if naive:
            shapes.append((f"{REPLICAS} flask db upgrade", flask_upgrade(), "plain", REPLICAS))
        walls: dict[str, list[float]] = {label: [] for label, _, _, _ in shapes}
        for _ in range(trials):
            for label, command, setup, replicas in shapes:
                cwd, _ = found[setup]
                with database(kind, scratch) as url:
                    env = runner_env(url) if setup != "directory" else runner_env(
                        url, RUNNER_MIGRATIONS_DIR="migrations")
                    failed, applied, wall = herd(command, env, cwd, replicas)
                walls[label].append(wall)
                print(f"  {label:34} wall {wall:6.2f}s  failed {failed}  applied {applied}")
        for label, runs in walls.items():
            setup = label.split("(")[-1].rstrip(")") if "(" in label else "plain"
            single = statistics.median(walls[f"1 runner migrate ({setup})"])
            print(f"{label:36} median wall {statistics.median(runs):6.2f}s"
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
            "depends_on = None\n\n\ndef upgrade():\n    op.add_column('post', sa.Column("
            f"'c{index}', sa.Integer()))\n\n\ndef downgrade():\n    pass\n"
        )
        down = revision
    return project


def section_scale(trials: int, revisions: int, scratch: Path) -> None:
    print(f"\n== 10 against {revisions} revisions (PostgreSQL), median of {trials} ==")
    small, large = linear_project(scratch, 10), linear_project(scratch, revisions)
    with fresh_database("postgresql") as small_url, fresh_database("postgresql") as large_url:
        run_ok(runner("migrate"), runner_env(small_url), small)
        run_ok(runner("migrate"), runner_env(large_url), large)
        for command in ("check", "status"):
            def timed(project: Path, url: str, command: str = command) -> Callable[[], float]:
                return lambda: cpu_seconds(runner(command), runner_env(url), project)

            base, results = paired(timed(small, small_url),
                                   {command: timed(large, large_url)}, trials)
            seconds, ratio = results[command]
            print(f"runner {command:7} 10: {base:.3f}s  {revisions}: {seconds:.3f}s"
                  f"  {ratio:5.2f}x")
        offline_env = runner_env(large_url)
        sql = lambda: cpu_seconds(runner("sql"), offline_env, large)  # noqa: E731
        base, results = paired(
            lambda: cpu_seconds(flask_upgrade("--sql"), offline_env, large),
            {"runner sql": sql}, trials,
        )
        seconds, ratio = results["runner sql"]
        print(f"runner sql at {revisions}: {seconds:.3f}s against flask db upgrade --sql"
              f" {base:.3f}s  {ratio:5.2f}x")
        lint = subprocess.run(runner("lint", "--help"), capture_output=True, check=False)
        if lint.returncode == 0:
            base, results = paired(sql, {"runner lint --offline": lambda: cpu_seconds(
                runner("lint", "--offline"), offline_env, large)}, trials)
            seconds, ratio = results["runner lint --offline"]
            print(f"runner lint --offline at {revisions}: {seconds:.3f}s against runner sql"
                  f" {base:.3f}s  {ratio:5.2f}x")


def first_200(command: Sequence[str], env: dict[str, str], cwd: Path) -> float:
    """Seconds from start until GET /healthz answers 200; the server is stopped after."""
    port = free_port()
    env = {**env, "PORT": str(port), "WEB_CONCURRENCY": "1"}
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
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
            time.sleep(0.01)
        raise SystemExit(f"{command} did not serve within 120 s")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def section_http(trials: int, kinds: Sequence[str], scratch: Path) -> None:
    print(f"\n== Time to the first HTTP 200 on a database at head, median of {trials} ==")
    gunicorn = f"{PYTHON} -m gunicorn 'app:create_app()'"
    naive = ["sh", "-c", f"{PYTHON} -m flask db upgrade && exec {gunicorn}"]
    bare = ["sh", "-c", f"exec {gunicorn}"]
    for kind in kinds:
        with database(kind, scratch) as url:
            run_ok(runner("migrate"), runner_env(url), EXAMPLE)
            plain = runner_env(url)
            candidates = {f"runner run ({setup})": (
                lambda cwd=cwd, env=env: first_200(runner("run"), env, cwd))  # type: ignore[misc]
                for setup, (cwd, env) in setups(url, scratch).items() if setup != "directory"}
            for label, against in (("flask db upgrade && exec gunicorn", naive),
                                   ("bare gunicorn", bare)):
                base, results = paired(
                    lambda against=against, plain=plain: first_200(  # type: ignore[misc]
                        against, plain, EXAMPLE), candidates, trials)
                for name, (seconds, ratio) in results.items():
                    print(f"{kind}: {name} {seconds:.2f}s, {label} {base:.2f}s  {ratio:5.2f}x")


def sessions_opened(database_name: str) -> int:
    """How many sessions the server has established to a database so far (PostgreSQL 14+)."""
    engine = sa.create_engine(ADMIN_URLS["postgresql"], poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(sa.text(
                "SELECT sessions FROM pg_stat_database WHERE datname = :name"),
                {"name": database_name}) or 0)
    finally:
        engine.dispose()


def section_connections(trials: int, scratch: Path) -> None:
    print(f"\n== Connections and wall of a herd with a 3 s revision (PostgreSQL), {trials}"
          " trials ==")
    project = scratch / "connections"
    copy_app(EXAMPLE, project)
    add_revision(project, "slow", 'op.execute("SELECT pg_sleep(3)")')
    if has_prepare():
        run_ok(runner("prepare"), runner_env(None), project)
    walls: dict[int, list[float]] = {}
    churn: list[float] = []
    for replicas in (8, 32, 100):
        for _ in range(trials):
            with fresh_database("postgresql") as url:
                name = url.rsplit("/", 1)[1]
                env = runner_env(url, RUNNER_WAIT_TIMEOUT="300")
                before = sessions_opened(name)
                started = time.monotonic()
                with peak_connections(ADMIN_URLS["postgresql"], name) as peak:
                    processes = [subprocess.Popen(runner("migrate"), env=env, cwd=project,
                                                  stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.PIPE, text=True)
                                 for _ in range(replicas)]
                    outputs = [process.communicate()[1] for process in processes]
                wall = time.monotonic() - started
                opened = sessions_opened(name) - before
            walls.setdefault(replicas, []).append(wall)
            # Beyond one session each, and the holder's upgrade: the waiters' reconnects.
            per_minute = max(0, opened - replicas - 1) / (replicas - 1) / (wall / 60)
            churn.append(per_minute)
            failed = sum(process.returncode != 0 for process in processes)
            applied = sum('"event": "migrate.applied"' in output for output in outputs)
            print(f"  {replicas:3} replicas: peak {peak[0]:3} connections"
                  f" ({peak[0] / replicas:.2f} per replica), {opened} sessions opened"
                  f" ({per_minute:.1f} per waiting replica per minute), wall {wall:6.2f}s,"
                  f" failed {failed}, applied {applied}")
    eight = statistics.median(walls[8])
    for replicas, runs in walls.items():
        print(f"{replicas:3} replicas median wall {statistics.median(runs):6.2f}s"
              f"  {statistics.median(runs) / eight:5.2f}x the 8-replica herd"
              f" ({replicas / 8:.1f}x the replicas)")
    print(f"new sessions per waiting replica per minute, median: {statistics.median(churn):.1f}")


def main() -> None:
    global PYTHON
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--sections", default="cpu,herd,scale,http,connections")
    parser.add_argument("--databases", default=",".join(KINDS))
    parser.add_argument("--revisions", type=int, default=1000)
    parser.add_argument("--naive", action="store_true",
                        help="also run the naive herd: 8 `flask db upgrade` at once")
    parser.add_argument("--runner-python", default=sys.executable,
                        help="the interpreter of the runner under test (another checkout's)")
    args = parser.parse_args()
    PYTHON = args.runner_python
    sections = args.sections.split(",")
    kinds = [kind for kind in args.databases.split(",") if kind in KINDS]
    print(f"benchmark {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {os.uname().nodename},"
          f" {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, runner of {PYTHON}")
    with tempfile.TemporaryDirectory() as directory:
        scratch = Path(directory)
        if "cpu" in sections:
            section_cpu(kinds, args.trials, scratch)
        if "herd" in sections:
            section_herd(kinds, args.trials, args.naive, scratch)
        if "scale" in sections:
            section_scale(args.trials, args.revisions, scratch)
        if "http" in sections:
            section_http(args.trials, kinds, scratch)
        if "connections" in sections:
            section_connections(args.trials, scratch)


if __name__ == "__main__":
    main()

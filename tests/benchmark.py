"""Herd benchmark: the naive `flask db upgrade` start script against `runner migrate`.

Run: .venv/bin/python tests/benchmark.py [--trials N]. Prints failure counts and time
ratios; it asserts nothing (the tests do that), so timings never make a test flaky.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from support import EXAMPLE, fresh_database, runner_command, runner_env

REPLICAS = 8


def herd(command: Sequence[str], url: str, replicas: int) -> tuple[int, float]:
    """Start `replicas` copies at once; return how many failed and the wall time."""
    env = runner_env(url)
    started = time.monotonic()
    processes = [
        subprocess.Popen(command, env=env, cwd=EXAMPLE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        for _ in range(replicas)
    ]
    failed = sum(process.wait() != 0 for process in processes)
    return failed, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=3)
    trials = parser.parse_args().trials
    naive = [sys.executable, "-m", "flask", "db", "upgrade"]
    for kind in ("postgresql", "mysql"):
        results: dict[str, list[tuple[int, float]]] = {
            "naive": [], "runner": [], "single": [], "startup": []
        }
        for _ in range(trials):
            for label, command, replicas in (
                ("naive", naive, REPLICAS),
                ("runner", runner_command("migrate"), REPLICAS),
                ("single", runner_command("migrate"), 1),
                # Eight processes that only connect: the cost of starting 8 Pythons at once.
                ("startup", runner_command("wait"), REPLICAS),
            ):
                with fresh_database(kind) as url:
                    results[label].append(herd(command, url, replicas))
        for label, runs in results.items():
            failed = sum(f for f, _ in runs)
            trials_failing = sum(1 for f, _ in runs if f)
            mean = sum(t for _, t in runs) / len(runs)
            print(f"{kind:10} {label:7} failed replicas {failed:2} in {trials_failing}/{trials}"
                  f" trials, mean wall {mean:.2f}s")
        def total(label: str, results: dict[str, list[tuple[int, float]]] = results) -> float:
            return sum(t for _, t in results[label])

        print(f"{kind:10} 8-replica herd: {total('runner') / total('single'):.2f}x one runner,"
              f" {total('runner') / total('startup'):.2f}x eight processes that only connect,"
              f" {total('runner') / total('naive'):.2f}x the naive herd")
    started = time.monotonic()
    subprocess.run(runner_command("sql"), env=runner_env("postgresql+psycopg://u:p@127.0.0.1:9/x"),
                   cwd=EXAMPLE, capture_output=True, check=True)
    print(f"runner sql against a closed port: {time.monotonic() - started:.2f}s")


if __name__ == "__main__":
    main()

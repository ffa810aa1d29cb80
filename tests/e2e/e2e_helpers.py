"""Helpers of the end-to-end suite (podman, containers, databases, a TCP proxy).

In a module of its own, not conftest.py: tests import these, and the name
``conftest`` is taken by tests/conftest.py too.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import sqlalchemy as sa

from support import REQUIRE_E2E as REQUIRED
from support import fresh_database as shared_fresh_database
from support import http_get
from support import unavailable as shared_unavailable

E2E_DIR = Path(__file__).resolve().parent
ROOT = E2E_DIR.parent.parent
PREPARE_HOST = E2E_DIR / "prepare-host.sh"

IMAGE = os.environ.get("RUNNER_E2E_IMAGE", "localhost/migrate-runner:test")
PG_IMAGE = os.environ.get("RUNNER_E2E_PG_IMAGE", "localhost/migrate-runner-postgres:16")
MARIADB_IMAGE = os.environ.get("RUNNER_E2E_MARIADB_IMAGE", "localhost/migrate-runner-mariadb:11")
LABEL = "migrate-runner-e2e"


def podman_cmd() -> list[str]:
    """How to call podman: as root directly, else through sudo (rootful podman)."""
    return ["podman"] if os.geteuid() == 0 else ["sudo", "-n", "podman"]


def podman(*args: str, check: bool = True, timeout: float = 120,
           **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``podman ARGS``, text output captured."""
    result = subprocess.run(
        [*podman_cmd(), *args], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def unavailable(message: str) -> NoReturn:
    """Skip, or fail when the e2e tests are required (RUNNER_REQUIRE_E2E=1)."""
    shared_unavailable(message, REQUIRED)


# ---------------------------------------------------------------- the host


@dataclass
class Host:
    image: str
    pg_image: str
    mariadb_image: str
    build_seconds: float

def remove_leftovers() -> None:
    """Remove containers of earlier, interrupted runs of this suite."""
    ids = podman("ps", "-a", "-q", "--filter", f"label={LABEL}", check=False).stdout.split()
    if ids:
        podman("rm", "-f", "-t", "0", *ids, check=False)

# ---------------------------------------------------------------- databases


@dataclass
class Database:
    backend: str  # "postgresql" or "mariadb"
    name: str
    url: str  # as the containers (host network) reach it

    def url_on(self, host: str, port: int) -> str:
        """The URL through another address, e.g. a proxy."""
        return sa.make_url(self.url).set(host=host, port=port).render_as_string(
            hide_password=False)

    def query(self, sql: str) -> list[Any]:
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as connection:
                return list(connection.execute(sa.text(sql)))
        finally:
            engine.dispose()

    def tables(self) -> set[str]:
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            return set(sa.inspect(engine).get_table_names())
        finally:
            engine.dispose()


@contextmanager
def fresh_database(backend: str) -> Iterator[Database]:
    """A new, empty database on this machine's server, dropped afterwards."""
    kind = "mysql" if backend == "mariadb" else backend
    with ExitStack() as stack:
        try:
            url = stack.enter_context(shared_fresh_database(kind))
        except sa.exc.OperationalError as exc:
            unavailable(f"{backend} is not reachable: {' '.join(str(exc).split())[:200]}")
        yield Database(backend, sa.make_url(url).database or "", url)


# ---------------------------------------------------------------- containers


def parse_events(text: str) -> list[dict[str, Any]]:
    """The runner's JSON log events in a container's output.

    podman's log reader may join a line of stdout and one of stderr, so every
    JSON object is looked for, not only whole lines.
    """
    decoder = json.JSONDecoder()
    events = []
    for line in text.splitlines():
        start = line.find("{")
        while start != -1:
            try:
                obj, end = decoder.raw_decode(line, start)
            except ValueError:
                start = line.find("{", start + 1)
                continue
            if isinstance(obj, dict) and "event" in obj:
                events.append(obj)
            start = line.find("{", end)
    return events


@dataclass
class Container:
    name: str
    port: int | None

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def events(self) -> list[dict[str, Any]]:
        return parse_events(self.logs())

    def event_names(self) -> list[str]:
        return [e["event"] for e in self.events()]

    def state(self) -> dict[str, Any]:
        out = podman("inspect", "--format", "{{json .State}}", self.name).stdout
        return dict(json.loads(out))

    def exec(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *args, check=check)

    def pid1_argv(self) -> list[str]:
        out = self.exec("cat", "/proc/1/cmdline").stdout
        return [part for part in out.split("\0") if part]

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def wait_until_serving(container: Container, path: str = "/", deadline: float = 120,
                       url: str | None = None) -> float:
    """Poll until GET path answers 200; the seconds it took. Fails on exit or deadline."""
    start = time.monotonic()
    target = url or container.url(path)
    last: object = None
    while time.monotonic() - start < deadline:
        try:
            status, _body = http_get(target, timeout=3)
            if status == 200:
                return time.monotonic() - start
            last = status
        except OSError as exc:
            last = exc
        state = container.state()
        if not state.get("Running"):
            raise AssertionError(
                f"{container.name} exited {state.get('ExitCode')} before serving:\n"
                f"{container.logs()[-4000:]}")
        time.sleep(0.5)
    raise AssertionError(f"{container.name} not serving {target} after {deadline} s "
                         f"(last: {last!r}):\n{container.logs()[-4000:]}")


STOP_GRACE = 30
"""Seconds `podman stop` waits before its SIGKILL: the stop_grace_period of
docker-compose.yml and Kubernetes' default grace period. An idle gunicorn exits in a second
or two; the margin is for a loaded machine, where podman alone has taken 7 s (exit 0 is
the claim: gunicorn, PID 1, handled SIGTERM itself; how long it took is only printed)."""


def stop_and_time(container: Container, timeout: int = STOP_GRACE) -> tuple[int, float]:
    """podman stop (SIGTERM, then SIGKILL after timeout): (exit code, seconds)."""
    start = time.monotonic()
    podman("stop", "-t", str(timeout), container.name, timeout=timeout + 60)
    elapsed = time.monotonic() - start
    return int(container.state()["ExitCode"]), elapsed


def in_parallel(func: Callable[..., Any], items: list[Any]) -> list[Any]:
    """func(item) for each item, all at once in threads; results in order."""
    results: list[Any] = [None] * len(items)
    errors: list[BaseException] = []

    def run(i: int, item: Any) -> None:
        try:
            results[i] = func(item)
        except BaseException as exc:  # re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, item)) for i, item in enumerate(items)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def run_once(host: Host, *args: str, env: dict[str, str] | None = None,
             network: str = "host", timeout: float = 180,
             extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """podman run --rm [EXTRA] IMAGE ARGS: a one-off job; its result."""
    flags = [f"--network={network}", "--label", f"{LABEL}=1", "--no-healthcheck", *extra]
    for key, value in {"RUNNER_LOG_FORMAT": "json", **(env or {})}.items():
        flags += ["-e", f"{key}={value}"]
    return podman("run", "--rm", *flags, host.image, *args, check=False, timeout=timeout)


# ---------------------------------------------------------------- a TCP proxy


class TcpProxy:
    """Forward 127.0.0.1:listen_port to target, in threads of the test process.

    Stands for a database that comes up late: nothing listens on the port
    until start() is called.
    """

    def __init__(self, listen_port: int, target: tuple[str, int]) -> None:
        self.listen_port = listen_port
        self.target = target
        self.connections = 0
        self._server: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._stopped = threading.Event()

    def start(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.listen_port))
        server.listen(64)
        server.settimeout(0.5)
        self._server = server
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self.connections += 1
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.close()
        for s in self._sockets:
            with suppress(OSError):
                s.close()

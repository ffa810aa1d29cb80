"""The Kubernetes manifests, run for real with ``podman kube play``.

The rendered manifests of deploy/kubernetes, through the TEST-ONLY overlays in
tests/e2e/kubernetes/ (what podman 4.3 needs, each point explained there),
played on this machine against a fresh PostgreSQL database:

* the base: three pods whose ``migrate`` init containers race (podman 4.3
  plays a Deployment's replicas one after another, each once the previous
  pod's init containers are done: never concurrently; so the manifest is
  played once per pod, ``--start=false``, and the three pods are started at
  once); exactly one init container applies the migrations, the others log
  ``migrate.noop``; all three app containers (``runner serve``, on a read-only
  root filesystem) then serve ``/`` and ``/readyz``;
* the Job variant: three pods running ``runner serve --wait-for-head`` wait
  (no port open) until the Job's pod (its template, played as a Pod: podman
  does not play Jobs) has migrated, then serve.
"""

from __future__ import annotations

import copy
import json
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e_helpers import (
    E2E_DIR,
    Container,
    Database,
    Host,
    parse_events,
    podman,
    wait_until_serving,
)
from support import free_port, http_get, kustomize

pytestmark = pytest.mark.e2e

OVERLAYS = {"base": E2E_DIR / "kubernetes", "job": E2E_DIR / "kubernetes" / "job"}
# The image the overlays name (tests/e2e/kubernetes/podman/kustomization.yaml).
OVERLAY_IMAGE = "localhost/migrate-runner:test"
REPLICAS = 3
PREFIX = "e2e-k8s-"

Doc = dict[str, Any]


def render(variant: str, image: str) -> list[Doc]:
    docs = kustomize(OVERLAYS[variant])
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            spec = doc["spec"]["template"]["spec"]
            for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
                assert container["image"] == OVERLAY_IMAGE, container["image"]
                container["image"] = image
    return docs


def _settings_configmap(spec: Doc) -> str:
    return str(spec["containers"][0]["envFrom"][0]["configMapRef"]["name"])


def _own_volumes(spec: Doc, pod: str) -> list[str]:
    """Give the pod's volumes names of their own: podman 4.3 makes an emptyDir
    or ConfigMap volume a named volume called after the volume (the ConfigMap),
    which every pod naming it would share (and which outlives the pod)."""
    renamed = {}
    for volume in spec["volumes"]:
        new = f"{pod}-{volume['name']}"
        renamed[volume["name"]] = new
        volume["name"] = new
        if "configMap" in volume:
            volume["configMap"]["name"] = f"{pod}-database-url"
    for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
        for mount in container.get("volumeMounts") or []:
            mount["name"] = renamed[mount["name"]]
    # The ConfigMap volume is named after its ConfigMap: "{pod}-database-url" too.
    return sorted(renamed.values())


def pod_manifest(docs: list[Doc], kind: str, pod: str, port: int,
                 database_url: str) -> tuple[str, list[str]]:
    """The rendered YAML for one podman pod of `kind` (Deployment, or Job played as a Pod).

    Returns the YAML and the named volumes podman will make for it.
    """
    docs = copy.deepcopy(docs)
    workload = next(doc for doc in docs if doc["kind"] == kind)
    spec = workload["spec"]["template"]["spec"]
    settings_name = _settings_configmap(spec)
    database_cm = spec["volumes"][0]["configMap"]["name"]
    volumes = _own_volumes(spec, pod)
    out: list[Doc] = []
    for doc in docs:
        name = doc["metadata"]["name"]
        if doc["kind"] == "ConfigMap" and name == settings_name:
            # podman 4.3 lets envFrom override env: the port goes in the ConfigMap.
            doc["data"]["PORT"] = str(port)
            out.append(doc)
        elif doc["kind"] == "ConfigMap" and name == database_cm:
            doc["metadata"]["name"] = f"{pod}-database-url"
            doc["data"]["url"] = database_url
            out.append(doc)
        elif doc is workload and kind == "Deployment":
            doc["metadata"]["name"] = pod
            doc["spec"]["replicas"] = 1
            out.append(doc)
        elif doc is workload:
            # podman does not play Jobs: the Job's pod template, as a Pod.
            template = doc["spec"]["template"]
            out.append({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": pod, "labels": template["metadata"]["labels"]},
                        "spec": template["spec"]})
        elif doc["kind"] in ("Service", "PodDisruptionBudget"):
            out.append(doc)  # podman 4.3 ignores them; played anyway, as rendered
    return yaml.safe_dump_all(out, sort_keys=False), volumes


class Play:
    """`podman kube play` of one pod's manifest; removes what it made on cleanup()."""

    def __init__(self, directory: Path, pod: str, manifest: str, volumes: list[str],
                 containers: list[str], port: int) -> None:
        self.pod = pod
        self.path = directory / f"{pod}.yaml"
        self.path.write_text(manifest)
        self.volumes = volumes
        self.podman_pod = pod  # a Pod keeps its name
        self.containers = containers
        self.port = port
        self.result: subprocess.CompletedProcess[str] | None = None
        self.seconds = 0.0
        self.step = ""

    def play(self, start: bool = True) -> None:
        """podman kube play: create the pod (and start it, init containers first)."""
        began = time.monotonic()
        self.step = "kube play"
        self.result = podman("kube", "play", f"--start={str(start).lower()}", str(self.path),
                             check=False, timeout=150)
        self.seconds = time.monotonic() - began

    def start(self, barrier: threading.Barrier) -> None:
        """podman pod start, once every thread is ready: init containers, then the app."""
        barrier.wait(timeout=30)
        began = time.monotonic()
        self.step = "pod start"
        self.result = podman("pod", "start", self.podman_pod, check=False, timeout=150)
        self.seconds = time.monotonic() - began

    def container(self, name: str) -> Container:
        return Container(f"{self.podman_pod}-{name}", self.port)

    def logs(self) -> str:
        return "\n".join(f"----- {self.podman_pod}-{name} -----\n"
                         f"{self.container(name).logs()[-4000:]}" for name in self.containers)

    def cleanup(self) -> str:
        down = podman("kube", "down", str(self.path), check=False, timeout=60)
        podman("pod", "rm", "-f", "-t", "0", self.podman_pod, check=False, timeout=60)
        for volume in self.volumes:
            podman("volume", "rm", "-f", volume, check=False, timeout=60)
        return "ok" if down.returncode == 0 else (down.stderr.strip().splitlines() or ["?"])[-1]


@pytest.fixture
def plays(host: Host, request: pytest.FixtureRequest) -> Iterator[Callable[..., Play]]:
    """Make Plays; every pod and volume they made is removed afterwards (logs on failure)."""
    _remove_leftovers()
    made: list[Play] = []
    with tempfile.TemporaryDirectory(prefix="e2e-k8s-") as directory:

        def make(variant: str, kind: str, pod: str, database: Database,
                 port: int) -> Play:
            docs = render(variant, host.image)
            manifest, volumes = pod_manifest(docs, kind, pod, port, database.url)
            workload = next(doc for doc in docs if doc["kind"] == kind)
            spec = workload["spec"]["template"]["spec"]
            names = [c["name"] for c in [*(spec.get("initContainers") or []),
                                         *spec["containers"]]]
            play = Play(Path(directory), pod, manifest, volumes, names, port)
            if kind == "Deployment":
                play.podman_pod = f"{pod}-pod-0"  # how podman 4.3 names a Deployment's pod
            made.append(play)
            return play

        try:
            yield make
        finally:
            failed = getattr(request.node, "rep_call", None) is not None \
                and request.node.rep_call.failed
            downs = []
            for play in made:
                if failed:
                    print(f"\n{play.logs()}")
                downs.append(play.cleanup())
            print(f"[k8s] cleanup: podman kube down: {sorted(set(downs))}; "
                  f"then podman pod rm -f, podman volume rm")


def _remove_leftovers(older_than: float = 900) -> None:
    """Pods and volumes of an earlier, interrupted run of this module.

    Only those named with this module's prefix AND older than `older_than`
    seconds: another session may be running this module right now (its pods
    carry no suite label, so the suite's container sweep leaves them alone).
    """
    now = datetime.now(UTC)

    def old(created: str) -> bool:
        try:
            when = datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            return False
        return (now - when).total_seconds() > older_than

    listing = podman("pod", "ps", "--format", "json", check=False).stdout or "[]"
    pods = [p["Id"] for p in json.loads(listing)
            if p.get("Name", "").startswith(PREFIX) and old(str(p.get("Created", "")))]
    if pods:
        podman("pod", "rm", "-f", "-t", "0", *pods, check=False)
    listing = podman("volume", "ls", "--format", "json", check=False).stdout or "[]"
    volumes = [v["Name"] for v in json.loads(listing)
               if v.get("Name", "").startswith(PREFIX) and old(str(v.get("CreatedAt", "")))]
    if volumes:
        podman("volume", "rm", *volumes, check=False)  # not -f: never one in use


def _play_all_at_once(plays: list[Play]) -> float:
    """Create every pod (`podman kube play --start=false`), then start them all at once.

    Creating takes podman a second or so a pod, serialised by its locks:
    three plain `kube play` at once start their init containers up to ~0.5 s
    apart, longer than the migration takes. Started together, created pods
    reach the database within tens to a few hundred milliseconds of each other
    (26-730 ms in our runs): a real race for the lock, as a Deployment's pods
    on a cluster's nodes.
    """
    threads = [threading.Thread(target=p.play, kwargs={"start": False}) for p in plays]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for play in plays:
        _assert_played(play)
    barrier = threading.Barrier(len(plays))
    threads = [threading.Thread(target=p.start, args=(barrier,)) for p in plays]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - start


def _assert_played(play: Play) -> None:
    assert play.result is not None
    assert play.result.returncode == 0, (
        f"podman {play.step} {play.pod} exited {play.result.returncode}:\n"
        f"{play.result.stdout[-2000:]}\n{play.result.stderr[-3000:]}\n{play.logs()}")


def _assert_serves(play: Play) -> list[str]:
    """/, /readyz and /healthz answer 200; gunicorn is PID 1 on a read-only root."""
    web = play.container("web")
    wait_until_serving(web, "/readyz", deadline=60)
    statuses = {path: http_get(web.url(path))[0] for path in ("/", "/readyz", "/healthz")}
    assert statuses == {"/": 200, "/readyz": 200, "/healthz": 200}, statuses
    inspect = podman("inspect", "--format",
                     "{{.HostConfig.ReadonlyRootfs}} {{.Config.User}} {{.EffectiveCaps}}",
                     web.name).stdout.split(maxsplit=2)
    assert inspect[0] == "true", f"{web.name}: root filesystem not read-only: {inspect}"
    assert inspect[1] == "10001:10001", inspect
    assert inspect[2].strip() == "[]", f"{web.name}: capabilities left: {inspect[2]}"
    assert "gunicorn" in " ".join(web.pid1_argv()), web.pid1_argv()
    # runner.wsgi loads the image's FLASK_APP in each worker; `serve` never loaded it
    assert web.pid1_argv()[-1] == "runner.wsgi:serve('app:create_app()')", web.pid1_argv()
    events = [e["event"] for e in web.events()]
    assert "serve.exec" in events, events
    assert not [e for e in events if e.startswith(("migrate.", "lock."))], (
        f"{web.name} migrated: {events}")
    return events


def test_base_init_containers_race_one_migrates(plays: Callable[..., Play],
                                                pg_database: Database) -> None:
    run = uuid.uuid4().hex[:6]
    pods = [plays("base", "Deployment", f"{PREFIX}{run}-{i}", pg_database, free_port())
            for i in range(REPLICAS)]
    start = time.monotonic()
    played = _play_all_at_once(pods)
    for play in pods:
        _assert_played(play)

    init_events: dict[str, list[dict[str, Any]]] = {}
    for play in pods:
        migrate = play.container("migrate")
        state = migrate.state()
        assert not state["Running"] and state["ExitCode"] == 0, (
            f"{migrate.name}: {state}\n{migrate.logs()[-3000:]}")
        init_events[play.pod] = parse_events(migrate.logs())
    for play in pods:
        _assert_serves(play)
    ready = time.monotonic() - start

    outcomes = {pod: [e for e in events if e["event"] in ("migrate.applied", "migrate.noop")]
                for pod, events in init_events.items()}
    for pod, found in outcomes.items():
        assert len(found) == 1, f"{pod}: {[e['event'] for e in init_events[pod]]}"
    applied = [pod for pod, found in outcomes.items() if found[0]["event"] == "migrate.applied"]
    noops = [pod for pod, found in outcomes.items() if found[0]["event"] == "migrate.noop"]
    assert len(applied) == 1 and len(noops) == REPLICAS - 1, outcomes
    # The waiters never loaded the app: the image's manifest (runner prepare at build),
    # read on a read-only root filesystem, told them the head.
    assert [outcomes[pod][0].get("path") for pod in noops] == ["fast"] * len(noops), outcomes
    revisions = outcomes[applied[0]][0]["revisions"]
    assert pg_database.query("SELECT version_num FROM alembic_version") == [(revisions[-1],)]
    lock_waits = sum(1 for events in init_events.values()
                     for e in events if e["event"] == "lock.waiting")
    took_lock = sum(1 for events in init_events.values()
                    for e in events if e["event"] == "lock.acquired")
    # How close the three init containers came: when each reached the database.
    ready_at = sorted(datetime.fromisoformat(e["ts"].replace("Z", "+00:00"))
                      for events in init_events.values() for e in events
                      if e["event"] == "db.ready")
    assert len(ready_at) == REPLICAS, ready_at
    spread = (ready_at[-1] - ready_at[0]).total_seconds()
    assert spread < 10, f"the init containers did not start together: {spread:.1f} s apart"

    print(f"\n[k8s] base: {REPLICAS} pods made by `podman kube play --start=false`, then "
          f"started at once ({played:.1f} s for the 3 `podman pod start`, init containers "
          f"included: {', '.join(f'{p.seconds:.1f}' for p in pods)} s)")
    print(f"[k8s]   init containers: migrate.applied x{len(applied)} "
          f"({len(revisions)} revisions: {', '.join(revisions)}), "
          f"migrate.noop x{len(noops)}; lock.acquired x{took_lock}, lock.waiting x{lock_waits}; "
          f"db.ready of the first and last {spread * 1000:.0f} ms apart")
    print(f"[k8s]   app containers (`runner serve`, read-only root, uid 10001, no caps): "
          f"{REPLICAS}/{REPLICAS} serve / and /readyz 200; {ready:.1f} s from play to all ready")


def test_job_variant_pods_wait_for_the_job(plays: Callable[..., Play],
                                           pg_database: Database) -> None:
    run = uuid.uuid4().hex[:6]
    pods = [plays("job", "Deployment", f"{PREFIX}{run}-{i}", pg_database, free_port())
            for i in range(REPLICAS)]
    job = plays("job", "Job", f"{PREFIX}{run}-job", pg_database, free_port())
    start = time.monotonic()
    _play_all_at_once(pods)
    for play in pods:
        _assert_played(play)
        assert play.containers == ["web"], f"init containers in the Job variant: {play.containers}"

    # Before the Job: every pod waits for head, with no port open.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all("serve.waiting" in play.container("web").event_names() for play in pods):
            break
        time.sleep(0.5)
    for play in pods:
        web = play.container("web")
        assert web.state()["Running"], f"{web.name} exited:\n{web.logs()[-3000:]}"
        assert "serve.waiting" in web.event_names(), web.logs()[-3000:]
        try:
            status: object = http_get(web.url("/healthz"), timeout=2)[0]
        except OSError as exc:
            status = type(exc).__name__
        assert status != 200, f"{web.name} serves before the database is at head"
    waited = time.monotonic() - start

    job.play()
    _assert_played(job)
    migrate = job.container("migrate")
    deadline = time.monotonic() + 60
    while migrate.state()["Running"] and time.monotonic() < deadline:
        time.sleep(0.5)
    state = migrate.state()
    assert not state["Running"] and state["ExitCode"] == 0, (
        f"{migrate.name}: {state}\n{migrate.logs()[-3000:]}")
    assert "migrate.applied" in migrate.event_names(), migrate.logs()[-3000:]

    for play in pods:
        _assert_serves(play)
        assert "serve.at_head" in play.container("web").event_names()
    ready = time.monotonic() - start
    print(f"\n[k8s] job variant: {REPLICAS} pods waited for head {waited:.1f} s with no port "
          f"open; the Job's pod migrated (migrate.applied); then {REPLICAS}/{REPLICAS} "
          f"serve / and /readyz 200; {ready:.1f} s in all")

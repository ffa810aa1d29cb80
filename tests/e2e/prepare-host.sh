#!/usr/bin/env bash
# Prepare this machine to build and run the migrate-runner image with podman.
#
# Idempotent, and fast when everything is already done (each step checks
# first). Called by the e2e suite (tests/e2e/conftest.py) and by .ci/run.
#
# Usage:
#   tests/e2e/prepare-host.sh [STEP]...   (default: all)
#     host     install podman, runc, debootstrap; write the podman config
#     base     build the stand-in Python base image (debootstrap; ~1 min, cached)
#     image    build the app image from ./Dockerfile on that base
#     pgimage  build the stand-in "postgres:16" image (for docker-compose.yml)
#     mariadbimage  build the stand-in "mariadb:11" image (its mariadb profile)
#     compose  pip-install podman-compose into RUNNER_E2E_PYTHON's environment
#              if it is not there (the suite runs docker-compose.yml with it)
#     all      all of the above (compose only if RUNNER_E2E_PYTHON is set)
#     build-args  print the "podman build" arguments for this machine, one a line
#              (the suite builds docker/app.Dockerfile with them)
#
# Environment:
#   RUNNER_E2E_BASE_IMAGE   base image tag    (default localhost/migrate-runner-base:bookworm)
#   RUNNER_E2E_IMAGE        app image tag     (default localhost/migrate-runner:test)
#   RUNNER_E2E_PG_IMAGE     postgres stand-in (default localhost/migrate-runner-postgres:16)
#   RUNNER_E2E_MARIADB_IMAGE  mariadb stand-in (default localhost/migrate-runner-mariadb:11)
#   RUNNER_E2E_DEBIAN_MIRROR  debootstrap mirror (default: the one apt uses here)
#   RUNNER_E2E_PYTHON       the Python that runs the suite (default: python3)
#   RUNNER_E2E_REBUILD=1    rebuild the base and stand-in images even if they exist
#
# Why each step (found by trying on this machine, podman 4.3 on Debian 12):
#   * crun rejects the sandbox's hybrid cgroup layout: use runc + cgroupfs;
#   * the sandbox refuses to raise RLIMIT_NOFILE: default_ulimits = [];
#   * no image registry is reachable: the base image is debootstrapped from
#     the Debian mirror and imported;
#   * outbound TLS goes through an intercepting proxy whose CA is only in this
#     machine's bundle: the bundle is bind-mounted into builds.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "${HERE}/../.." && pwd)

BASE_IMAGE=${RUNNER_E2E_BASE_IMAGE:-localhost/migrate-runner-base:bookworm}
IMAGE=${RUNNER_E2E_IMAGE:-localhost/migrate-runner:test}
PG_IMAGE=${RUNNER_E2E_PG_IMAGE:-localhost/migrate-runner-postgres:16}
MARIADB_IMAGE=${RUNNER_E2E_MARIADB_IMAGE:-localhost/migrate-runner-mariadb:11}
SUITE=bookworm
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
CONF_DROPIN=/etc/containers/containers.conf.d/50-migrate-runner.conf

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo -n)
fi

log() { printf '[prepare-host] %s\n' "$*" >&2; }

# Run "$@" and print how long it took.
timed() {
    local label=$1 start end
    shift
    start=$(date +%s%N)
    "$@"
    end=$(date +%s%N)
    log "${label}: $(awk -v a="${start}" -v b="${end}" 'BEGIN { printf "%.1f s", (b - a) / 1e9 }')"
}

debian_mirror() {
    if [ -n "${RUNNER_E2E_DEBIAN_MIRROR:-}" ]; then
        echo "${RUNNER_E2E_DEBIAN_MIRROR}"
        return
    fi
    local mirror=""
    # deb822 sources ("URIs: http://deb.debian.org/debian") then one-line ones.
    # The first URI ending in /debian (not -security, not a third-party repo).
    mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }')
    if [ -z "${mirror}" ]; then
        mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:.*\/debian\/?$/) { print $i; exit } }')
    fi
    echo "${mirror:-http://deb.debian.org/debian}"
}

step_host() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || missing+=(runc)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        "${SUDO[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    # A drop-in (containers.conf(5) reads /etc/containers/containers.conf.d/*.conf
    # after containers.conf) leaves any existing containers.conf alone.
    local want
    want=$(printf '%s\n' \
        '# Written by migrate-runner tests/e2e/prepare-host.sh' \
        '[containers]' \
        '# the sandbox refuses to raise RLIMIT_NOFILE' \
        'default_ulimits = []' \
        '[engine]' \
        '# crun rejects the hybrid cgroup layout here' \
        'runtime = "runc"' \
        'cgroup_manager = "cgroupfs"')
    if [ "$(cat "${CONF_DROPIN}" 2>/dev/null)" != "${want}" ]; then
        log "writing ${CONF_DROPIN}"
        "${SUDO[@]}" mkdir -p "$(dirname "${CONF_DROPIN}")"
        printf '%s\n' "${want}" | "${SUDO[@]}" tee "${CONF_DROPIN}" >/dev/null
    fi
}

podman_() { "${SUDO[@]}" podman "$@"; }

step_base() {
    if [ "${RUNNER_E2E_REBUILD:-0}" != 1 ] && podman_ image exists "${BASE_IMAGE}"; then
        return
    fi
    local dir mirror
    mirror=$(debian_mirror)
    dir=$(mktemp -d /var/tmp/migrate-runner-base.XXXXXX)
    # shellcheck disable=SC2064  # expand ${dir} now, on purpose
    trap "${SUDO[*]} rm -rf '${dir}'" EXIT
    log "debootstrap ${SUITE} from ${mirror} into ${dir} (about a minute)"
    timed "debootstrap" "${SUDO[@]}" debootstrap --variant=minbase \
        --include=python3,python3-venv,ca-certificates \
        "${SUITE}" "${dir}" "${mirror}" >/dev/null
    "${SUDO[@]}" rm -rf "${dir}"/var/cache/apt/archives/*.deb "${dir}"/var/lib/apt/lists/*
    log "importing ${BASE_IMAGE}"
    timed "import" bash -c "${SUDO[*]} tar -C '${dir}' -c . | ${SUDO[*]} podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD [\"python3\"]' - '${BASE_IMAGE}' >/dev/null"
    "${SUDO[@]}" rm -rf "${dir}"
    trap - EXIT
}

# Arguments for "podman build" that adapt this machine to the Dockerfile
# without changing it: the host network, the host CA bundle (TLS is
# intercepted here), and pip's index if this machine names one.
build_args() {
    # --format docker: the OCI format has no HEALTHCHECK, podman would drop it.
    local args=(--format docker --network host --build-arg "BASE_IMAGE=${BASE_IMAGE}")
    if [ -r "${CA_BUNDLE}" ]; then
        args+=(-v "${CA_BUNDLE}:${CA_BUNDLE}:ro" --build-arg "PIP_CERT=${CA_BUNDLE}")
    fi
    local index
    index=${PIP_INDEX_URL:-$(pip config get global.index-url 2>/dev/null || true)}
    case "${index}" in
        http://* | https://*) args+=(--build-arg "PIP_INDEX_URL=${index}") ;;
        *) ;; # unset, or a file:// index that does not exist inside the build
    esac
    printf '%s\n' "${args[@]}"
}

step_image() {
    local args=()
    mapfile -t args < <(build_args)
    log "building ${IMAGE} from ${ROOT}/Dockerfile"
    timed "build ${IMAGE}" podman_ build "${args[@]}" -t "${IMAGE}" -f "${ROOT}/Dockerfile" "${ROOT}"
}

# A stand-in for an official database image: Debian's package on the base.
build_standin() {
    local tag=$1 dir=$2
    if [ "${RUNNER_E2E_REBUILD:-0}" != 1 ] && podman_ image exists "${tag}"; then
        return
    fi
    log "building ${tag} (Debian's package on ${BASE_IMAGE})"
    timed "build ${tag}" podman_ build --quiet --network host \
        --build-arg "BASE_IMAGE=${BASE_IMAGE}" \
        -t "${tag}" -f "${dir}/Containerfile" "${dir}"
}

step_pgimage() { build_standin "${PG_IMAGE}" "${HERE}/postgres"; }
step_mariadbimage() { build_standin "${MARIADB_IMAGE}" "${HERE}/mariadb"; }

step_compose() {
    local python=${RUNNER_E2E_PYTHON:-python3}
    if ! "${python}" -c 'import podman_compose' 2>/dev/null; then
        log "installing podman-compose for ${python}"
        "${python}" -m pip install --quiet 'podman-compose>=1.1'
    fi
}

main() {
    local steps=("$@")
    [ "${#steps[@]}" -gt 0 ] || steps=(all)
    local start=${SECONDS}
    for s in "${steps[@]}"; do
        case "${s}" in
            host) step_host ;;
            base) step_host; step_base ;;
            image) step_host; step_base; step_image ;;
            pgimage) step_host; step_base; step_pgimage ;;
            mariadbimage) step_host; step_base; step_mariadbimage ;;
            compose) step_compose ;;
            build-args) build_args ;;
            all)
                step_host; step_base; step_image; step_pgimage; step_mariadbimage
                # only into a Python named for it, never the system's by surprise
                if [ -n "${RUNNER_E2E_PYTHON:-}" ]; then step_compose; fi
                ;;
            *) log "unknown step: ${s}"; exit 2 ;;
        esac
    done
    log "done in $((SECONDS - start)) s"
}

main "$@"

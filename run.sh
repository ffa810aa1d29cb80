#!/usr/bin/env bash
# ./run.sh          serve the example app on SQLite at http://127.0.0.1:8000
# ./run.sh test     run the whole test suite (lint, types, unit, integration, e2e)
# ./run.sh test-floor  the tests of the oldest supported stack: every dependency pinned
#                   to its floor in pyproject.toml, in .venv-floor (CI runs it too)
# ./run.sh ARGS...  any other runner command against the example, e.g. ./run.sh status
set -euo pipefail
cd "$(dirname "$0")"

venv=.venv

# Create the virtualenv on first use, and reinstall when pyproject.toml changes.
ensure_venv() {
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  if [ ! -f "$venv/.installed" ] || [ pyproject.toml -nt "$venv/.installed" ]; then
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    # the dev tools are a PEP 735 dependency group (pip >= 25.1)
    "$venv/bin/python" -m pip install --quiet -e . --group dev
    touch "$venv/.installed"
  fi
}

floor_venv=.venv-floor

# The runner with every dependency at its floor (tests/floor_constraints.py), plus
# pytest, and what the test apps bring: psycopg2 (SQLAlchemy 1.4 has no psycopg 3
# dialect) and python-dotenv (their .flaskenv). The test apps use the db.Column style.
ensure_floor_venv() {
  if [ ! -x "$floor_venv/bin/python" ]; then
    python3 -m venv "$floor_venv"
  fi
  if [ ! -f "$floor_venv/.installed" ] || [ pyproject.toml -nt "$floor_venv/.installed" ] \
    || [ tests/floor_constraints.py -nt "$floor_venv/.installed" ]; then
    "$floor_venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" tests/floor_constraints.py > "$floor_venv/constraints.txt"
    "$floor_venv/bin/python" -m pip install --quiet -c "$floor_venv/constraints.txt" \
      -e . 'pytest>=8' 'pytest-timeout>=2.3' psycopg2-binary python-dotenv
    touch "$floor_venv/.installed"
  fi
}

ensure_venv
case "${1:-serve}" in
  test)
    shift || true
    "$venv/bin/ruff" check runner tests example
    "$venv/bin/mypy" runner
    "$venv/bin/hadolint" Dockerfile docker/app.Dockerfile tests/e2e/*/Containerfile
    find docker tests -name '*.sh' -print0 | xargs -0 "$venv/bin/shellcheck" run.sh .ci/run
    # Tests in parallel (each has databases and files of its own); the container tests
    # in one worker, one after another (RUNNER_TEST_WORKERS=0: none in parallel).
    exec "$venv/bin/python" -m pytest -n "${RUNNER_TEST_WORKERS:-3}" --dist loadgroup "$@"
    ;;
  test-floor)
    shift
    ensure_floor_venv
    # The same servers, through psycopg2.
    admin=${TEST_POSTGRESQL_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/postgres}
    export TEST_POSTGRESQL_URL="postgresql+psycopg2://${admin#*://}"
    exec "$floor_venv/bin/python" -m pytest -p no:cacheprovider \
      tests/integration/test_packaged_app.py tests/integration/test_tutorial_app.py "$@"
    ;;
  serve)
    [ $# -gt 0 ] && shift
    cd example
    export FLASK_APP='app:create_app()'
    exec ../"$venv"/bin/runner run "$@"
    ;;
  *)
    cd example
    export FLASK_APP='app:create_app()'
    exec ../"$venv"/bin/runner "$@"
    ;;
esac

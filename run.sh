#!/usr/bin/env bash
# ./run.sh          serve the example app on SQLite at http://127.0.0.1:8000
# ./run.sh test     run the whole test suite (lint, types, unit, integration, e2e)
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
    "$venv/bin/python" -m pip install --quiet -e '.[test]'
    touch "$venv/.installed"
  fi
}

ensure_venv
case "${1:-serve}" in
  test)
    shift || true
    "$venv/bin/ruff" check runner tests example
    "$venv/bin/mypy" runner
    "$venv/bin/hadolint" Dockerfile tests/e2e/*/Containerfile
    find docker tests -name '*.sh' -print0 | xargs -0 "$venv/bin/shellcheck" run.sh .ci/run
    exec "$venv/bin/python" -m pytest "$@"
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

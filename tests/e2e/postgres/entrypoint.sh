#!/usr/bin/env bash
# Entrypoint of the e2e tests' postgres:16 stand-in (see Containerfile):
# initialise PGDATA on first start the way the official image does, then
# exec the server (PID 1, no shell left behind).
set -euo pipefail

: "${PGDATA:=/var/lib/postgresql/data}"
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-${user}}
password=${POSTGRES_PASSWORD:-}
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    password=$(<"${POSTGRES_PASSWORD_FILE}")
fi

if [ ! -s "${PGDATA}/PG_VERSION" ]; then
    if [ -z "${password}" ]; then
        echo "entrypoint: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "${password}" >"${pwfile}"
    initdb --username="${user}" --pwfile="${pwfile}" --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 -D "${PGDATA}" >/dev/null
    rm -f "${pwfile}"
    printf '%s\n' "host all all all scram-sha-256" >>"${PGDATA}/pg_hba.conf"
    # Local socket only while setting up, as the official image does.
    pg_ctl -D "${PGDATA}" -o "-c listen_addresses=''" -w start >/dev/null
    if [ "${db}" != postgres ]; then
        createdb --username="${user}" "${db}"
    fi
    pg_ctl -D "${PGDATA}" -m fast -w stop >/dev/null
    echo "entrypoint: initialised ${PGDATA} (user ${user}, database ${db})"
fi

if [ "${1:-}" = postgres ]; then
    shift
    exec postgres -D "${PGDATA}" -c listen_addresses='*' "$@"
fi
exec "$@"

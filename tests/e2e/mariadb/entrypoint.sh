#!/usr/bin/env bash
# Entrypoint of the e2e tests' mariadb:11 stand-in (see Containerfile):
# initialise /var/lib/mysql on first start the way the official image does,
# then exec the server (PID 1).
set -euo pipefail

datadir=/var/lib/mysql
socket=/run/mysqld/mysqld.sock
password=${MARIADB_PASSWORD:-}
if [ -n "${MARIADB_PASSWORD_FILE:-}" ]; then
    password=$(<"${MARIADB_PASSWORD_FILE}")
fi

sql_string() { printf "'%s'" "${1//\'/\'\'}"; }

if [ ! -d "${datadir}/mysql" ]; then
    mariadb-install-db --datadir="${datadir}" --auth-root-authentication-method=socket \
        --auth-root-socket-user="$(id -un)" \
        --skip-test-db >/dev/null
    # Set up on the socket only, as the official image does.
    mariadbd --datadir="${datadir}" --skip-networking --socket="${socket}" &
    pid=$!
    for _ in $(seq 60); do
        mariadb-admin --socket="${socket}" ping --silent 2>/dev/null && break
        sleep 0.5
    done
    {
        if [ -n "${MARIADB_DATABASE:-}" ]; then
            echo "CREATE DATABASE IF NOT EXISTS \`${MARIADB_DATABASE}\`;"
        fi
        if [ -n "${MARIADB_USER:-}" ] && [ -n "${password}" ]; then
            echo "CREATE USER '${MARIADB_USER}'@'%' IDENTIFIED BY $(sql_string "${password}");"
            if [ -n "${MARIADB_DATABASE:-}" ]; then
                echo "GRANT ALL ON \`${MARIADB_DATABASE}\`.* TO '${MARIADB_USER}'@'%';"
            fi
        fi
        # MARIADB_RANDOM_ROOT_PASSWORD: root (and mysql, the admin account this
        # script uses) keep socket authentication only,
        # which nobody outside the container can use either.
    } | mariadb --socket="${socket}"
    mariadb-admin --socket="${socket}" shutdown
    wait "${pid}" || true
    echo "entrypoint: initialised ${datadir} (database ${MARIADB_DATABASE:-}, user ${MARIADB_USER:-})"
fi

if [ "${1:-}" = mariadbd ]; then
    shift
    exec mariadbd --datadir="${datadir}" --socket="${socket}" --bind-address=0.0.0.0 "$@"
fi
exec "$@"

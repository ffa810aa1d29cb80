#!/usr/bin/env bash
# The stand-in's healthcheck.sh: the official image's takes --connect,
# --innodb_initialized and more; here any of them means "the server answers
# on TCP" (not only on the socket, as the set-up server does). mariadb-admin
# ping succeeds even when the login is refused: the server is up.
set -euo pipefail
exec mariadb-admin --protocol=tcp --host=127.0.0.1 --connect-timeout=3 ping --silent >/dev/null

#!/usr/bin/env bash
# The stand-in's healthcheck.sh: the official image's takes --connect,
# --innodb_initialized and more; here any of them means "answers a query".
set -euo pipefail
exec mariadb --socket=/run/mysqld/mysqld.sock -uroot --connect-timeout=3 -e 'SELECT 1' >/dev/null

# Image for the example Flask app, with migrate-runner as its entrypoint.
#
#   docker build -t migrate-runner-example .
#   docker run -e DATABASE_URL=postgresql+psycopg://... -p 8000:8000 migrate-runner-example
#       wait for the database, migrate under the lock, exec gunicorn (PID 1)
#   docker run --rm -e DATABASE_URL=... migrate-runner-example migrate   (or status, check, sql, wait)
#
# BASE_IMAGE: any Debian-based image with python3 (>= 3.11) and its venv
# module; name a mirror or a local image with --build-arg BASE_IMAGE=...
ARG BASE_IMAGE=python:3.12-slim

# ---------------------------------------------------------------- build stage
FROM ${BASE_IMAGE} AS build

# Only for builds behind a private index or an intercepting proxy (the
# project's e2e tests pass them); a plain build needs neither.
ARG PIP_INDEX_URL
ARG PIP_CERT

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:${PATH}

RUN python3 -m venv /opt/venv

WORKDIR /src

# Dependencies first, from pyproject.toml alone, so that a change to the
# runner or the app does not reinstall them (this layer stays cached).
COPY pyproject.toml ./
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt

# Then the runner itself, without touching its dependencies. README.md is
# the package's readme (pyproject.toml), so setuptools wants it.
COPY README.md ./
COPY runner/ runner/
RUN pip install --no-cache-dir --no-deps . \
    && runner --help > /dev/null

# ---------------------------------------------------------------- final stage
FROM ${BASE_IMAGE}

# Compilers, pip's cache and the build tree stay in the build stage: only the
# virtualenv comes across (same base image, so its python3 links hold).
COPY --from=build /opt/venv /opt/venv

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:${PATH} \
    VIRTUAL_ENV=/opt/venv \
    FLASK_APP="app:create_app()"

# No RUNNER_MIGRATIONS_DIR: the app names its migrations directory itself, and
# the manifest below is only used by starts with the same FLASK_APP and the same
# RUNNER_MIGRATIONS_DIR (here: none) as `runner prepare` had.

# A fixed, unprivileged uid (a home is not needed).
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin app

WORKDIR /app/example
COPY example/ /app/example/

# The app's instance folder holds the default SQLite database: the only place
# the app writes, so the only place the non-root user owns. The code stays
# root-owned and read-only to it.
#
# Then `runner prepare`, the last build step, after the app's files and in the
# WORKDIR the containers run in, with the FLASK_APP above: it loads the app once
# (no database: without DATABASE_URL the example only names a SQLite file in
# its instance folder) and writes /app/example/.migrate-runner.json, what only
# the app knows (migrations directory, version table, binds, heads) with a
# digest of every file it came from. A replica whose database is at head then
# decides so with one query, without loading the app (`migrate.noop` with
# `path: "fast"`); run with another FLASK_APP, RUNNER_MIGRATIONS_DIR or working
# directory, or with a changed file, it loads the app, as without the manifest.
# The manifest is only read at run time: the root filesystem may be read-only.
# The example picks other migrations (migrations_multidb/, a second database)
# when EXAMPLE_SECOND_DATABASE_URL is set at run time, which no manifest can
# see: run such containers with RUNNER_MIGRATIONS_DIR=/app/example/migrations_multidb
# as well, which sets the manifest aside (each start loads the app).
RUN mkdir -p /app/example/instance \
    && chown app:app /app/example/instance \
    && runner prepare

# Numeric, so that Kubernetes runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001

# The runner binds gunicorn to 0.0.0.0:${PORT:-8000}.
EXPOSE 8000

# No curl in slim images: python3's urllib. PORT is read at check time, so a
# container started with another PORT is checked on it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]

# gunicorn's graceful shutdown signal. The runner execs gunicorn, which is
# PID 1 and so receives it directly (no shell in between).
STOPSIGNAL SIGTERM

ENTRYPOINT ["runner"]
CMD ["run"]

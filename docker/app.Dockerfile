# A template image for your own Flask + Flask-Migrate app, with migrate-runner
# as its entrypoint. Copy it into your project, or build with it from there:
#
#   docker build -f app.Dockerfile --build-arg FLASK_APP='myapp:create_app' -t myapp .
#   docker run -e DATABASE_URL=postgresql://user:pw@db/app -p 8000:8000 myapp
#       wait for the database, migrate under the lock, exec gunicorn (PID 1)
#   docker run --rm -e DATABASE_URL=... myapp migrate   (or status, check, sql, wait)
#
# The build context is your project's directory: its requirements.txt (your
# app's dependencies: Flask-Migrate, your database driver, ...), your code and
# its migrations/ directory. Build arguments:
#   BASE_IMAGE          any Debian-based image with python3 (>= 3.11) and venv
#   RUNNER_REQUIREMENT  pip's requirement for the runner (default
#                       migrate-runner); a path, e.g. a wheel, is taken
#                       relative to the build context
#   FLASK_APP           your app, as `flask --app` takes it; or set FLASK_APP at
#                       run time, or in a .flaskenv
ARG BASE_IMAGE=python:3.12-slim

# ---------------------------------------------------------------- build stage
FROM ${BASE_IMAGE} AS build

# Only for builds behind a private index or an intercepting proxy.
ARG PIP_INDEX_URL
ARG PIP_CERT
ARG RUNNER_REQUIREMENT=migrate-runner

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:${PATH}

RUN python3 -m venv /opt/venv

WORKDIR /src

# Your dependencies first, so that a change to your code does not reinstall them.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

# Then the runner (from the context when RUNNER_REQUIREMENT is a path). Pin it
# there, e.g. --build-arg RUNNER_REQUIREMENT='migrate-runner==0.1.0'.
COPY . ./
# hadolint ignore=DL3013
RUN pip install --no-cache-dir "${RUNNER_REQUIREMENT}" \
    && runner --help > /dev/null

# ---------------------------------------------------------------- final stage
FROM ${BASE_IMAGE}

ARG FLASK_APP=

# Compilers, pip's cache and the build tree stay in the build stage: only the
# virtualenv comes across (same base image, so its python3 links hold).
COPY --from=build /opt/venv /opt/venv

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:${PATH} \
    VIRTUAL_ENV=/opt/venv \
    FLASK_APP=${FLASK_APP}

# A fixed, unprivileged uid; no home (the runner's gunicorn config needs none).
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin app

# The code stays root-owned and read-only to the app; the instance folder (a
# default SQLite database, uploads) is the only place it may write.
WORKDIR /app
COPY . /app/
RUN mkdir -p /app/instance \
    && chown app:app /app/instance

# Numeric, so that Kubernetes runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001

# The runner binds gunicorn to 0.0.0.0:${PORT:-8000}; with no gunicorn.conf.py
# in /app, the runner's default gunicorn config applies (WEB_CONCURRENCY workers,
# access log on stdout, JSON lines with RUNNER_LOG_FORMAT=json).
EXPOSE 8000

# /healthz comes from runner.health: app.register_blueprint(health_blueprint()).
# Drop this if your app does not register it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]

# gunicorn's graceful shutdown signal; gunicorn is PID 1 (the runner execs it).
STOPSIGNAL SIGTERM

ENTRYPOINT ["runner"]
CMD ["run"]

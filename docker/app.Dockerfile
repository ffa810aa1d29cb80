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
#   FLASK_APP           your app, as `flask --app` takes it. Not given: the
#                       FLASK_APP of your .flaskenv/.env (read only with
#                       python-dotenv in requirements.txt), or your wsgi.py or
#                       app.py, as `flask` finds them
#
# The last build step, `runner prepare`, loads your app once (it never
# connects to a database) and writes /app/.migrate-runner.json: what only your
# app knows (migrations directory, version table, binds, heads), with a digest
# of every file it came from. A replica whose database is already at head then
# decides so with one query, without loading your app (`migrate.noop` with
# `path: "fast"`). It holds for the FLASK_APP and RUNNER_MIGRATIONS_DIR of the
# build and the WORKDIR below: a container run with another FLASK_APP (or one
# given only at run time), with RUNNER_MIGRATIONS_DIR set (best left unset: your
# app knows its directory), or in another working directory loads the app at
# every start, as without a manifest: correct, only slower.
ARG BASE_IMAGE=python:3.12-slim
ARG FLASK_APP=

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
FROM ${BASE_IMAGE} AS runtime

# Compilers, pip's cache and the build tree stay in the build stage: only the
# virtualenv comes across (same base image, so its python3 links hold).
COPY --from=build /opt/venv /opt/venv

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:${PATH} \
    VIRTUAL_ENV=/opt/venv

# A fixed, unprivileged uid; no home (the runner's gunicorn config needs none).
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin app

# FLASK_APP goes into the image's environment only when it is given: set, even
# empty, it would hide the FLASK_APP of a .flaskenv/.env (`flask` and the
# runner never let those files override a variable that is set). So the image
# is the stage runtime-flask-app when the build arg is given, else runtime.
FROM runtime AS runtime-flask-app
ARG FLASK_APP
ENV FLASK_APP=${FLASK_APP}

# hadolint ignore=DL3006
FROM runtime${FLASK_APP:+-flask-app}

# The code stays root-owned and read-only to the app; the instance folder (a
# default SQLite database, uploads) is the only place it may write.
#
# Then `runner prepare` (see the top of this file), as root since the code is
# root-owned, in the WORKDIR the containers run in, with the image's FLASK_APP,
# after your files are copied: keep it the last step that changes them. A
# manifest copied from your machine is replaced (list .migrate-runner.json in
# your .dockerignore). An app that needs a setting just to be created (say a
# SECRET_KEY or DATABASE_URL read in create_app) gets one for this step only:
# `SECRET_KEY=unused runner prepare`; a setting that chooses its migrations
# (directory, version table, binds) must have its run-time value. Without the
# FLASK_APP build arg, an app that cannot be found or loaded here leaves the
# image without a manifest and the build goes on; with it, the build fails.
WORKDIR /app
COPY . /app/
RUN mkdir -p /app/instance \
    && chown app:app /app/instance \
    && rm -f .migrate-runner.json \
    && if [ -n "${FLASK_APP:-}" ]; then \
           runner prepare; \
       else \
           runner prepare || echo "no app found without FLASK_APP: no manifest," \
               "each start loads the app FLASK_APP names at run time" >&2; \
       fi

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

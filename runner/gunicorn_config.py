"""gunicorn's config when the app brings none: the runner passes it as `-c python:THIS_MODULE`.

Applies only when there is no ``gunicorn.conf.py`` in the working directory and no
``-c``/``--config`` in the gunicorn arguments or ``GUNICORN_CMD_ARGS``; settings given
there (e.g. ``GUNICORN_CMD_ARGS=--workers=4``) override the ones here. ``bind`` is left
out: the runner sets ``PORT``, and gunicorn binds ``0.0.0.0:$PORT`` by itself.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

# Worker processes: WEB_CONCURRENCY (the usual platform variable), default 2.
workers = int(os.environ.get("WEB_CONCURRENCY") or 2)

# Access log on stdout, error log on stderr, as containers expect.
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")

# On SIGTERM workers get this long to finish their requests: shorter than the 30 s grace
# of docker-compose.yml (stop_grace_period) and of Kubernetes (terminationGracePeriodSeconds),
# so gunicorn exits by itself (0) before it is killed. (`docker stop` alone waits 10 s:
# `-t`/`--stop-timeout` for longer requests.) An idle gunicorn exits at once.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))

# Worker heartbeat files in memory where there is one (a tmpfs in containers); the
# image's own filesystem may be read-only.
worker_tmp_dir = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()

# gunicorn >= 25.1 opens a control socket (for gunicornc) under $HOME, which a
# container's user often lacks ("Permission denied: '/nonexistent'"). Older
# versions ignore this setting.
control_socket = os.path.join(tempfile.gettempdir(), "gunicorn.ctl")

# RUNNER_LOG_FORMAT=json: gunicorn's error and access lines as the runner's JSON events
# (event "gunicorn.error" / "gunicorn.access"), access on stdout, errors on stderr.
logconfig_dict: dict[str, Any] = {}
if os.environ.get("RUNNER_LOG_FORMAT") == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"event": {"()": "runner.log.JsonEventFormatter"}},
        "handlers": {
            "stdout": {"class": "logging.StreamHandler", "formatter": "event",
                       "stream": "ext://sys.stdout"},
            "stderr": {"class": "logging.StreamHandler", "formatter": "event",
                       "stream": "ext://sys.stderr"},
        },
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": loglevel.upper(), "handlers": ["stderr"],
                               "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
        },
    }


# Probes (GET /healthz, /readyz of runner.health) every few seconds would fill the access
# log: a probe that succeeds is not logged; one that fails is.
PROBE_PATHS = ("/healthz", "/readyz")


class QuietProbes:
    """A filter for gunicorn.access: drops the records of successful probes."""

    def filter(self, record: Any) -> bool:
        atoms = record.args if isinstance(record.args, dict) else {}
        return not (atoms.get("U") in PROBE_PATHS and str(atoms.get("s")) == "200")


def post_worker_init(worker: Any) -> None:
    """gunicorn's hook in each worker: the probe filter on the access log."""
    import logging

    logging.getLogger("gunicorn.access").addFilter(QuietProbes())

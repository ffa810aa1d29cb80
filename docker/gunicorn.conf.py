"""gunicorn settings for the migrate-runner example image.

The image copies this file to the app's working directory as
``gunicorn.conf.py``, which gunicorn reads when no ``--config`` is given.
Settings passed in ``GUNICORN_CMD_ARGS`` or after ``runner run --`` override
the ones here.

``bind`` is left out: the runner sets ``PORT`` (8000 unless given), and
gunicorn then binds ``0.0.0.0:$PORT`` by itself.
"""

import os

# Worker processes: WEB_CONCURRENCY (the usual platform variable), default 2.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))

# Access and error logs on the container's stdout/stderr.
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")

# On SIGTERM (the image's STOPSIGNAL) workers get this long to finish their
# requests: shorter than the usual 30 s stop timeout of docker/podman/compose
# and Kubernetes' default grace period, so gunicorn exits by itself (0)
# before it is killed.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))

# Worker heartbeat files in memory: /tmp may be a slow overlay layer.
worker_tmp_dir = "/dev/shm"

# gunicorn >= 25.1 opens a control socket (for gunicornc) under $HOME, and
# the image's user has no home: put it in /tmp. Older versions ignore this.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "/tmp/gunicorn.ctl")

"""The termination message: the outcome as one small JSON object, where Kubernetes reads it.

Kubernetes shows a container's termination message in `kubectl describe pod` and
in the pod's status; it reads at most 4 KB from `/dev/termination-log`.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.log import EventLog, events

DEFAULT_PATH = Path("/dev/termination-log")
LIMIT = 4096
"""Kubernetes keeps the first 4096 bytes of the message."""

_CUT = "..."


def termination_log_path(environ: Mapping[str, str]) -> Path | None:
    """RUNNER_TERMINATION_LOG (empty: none), else /dev/termination-log when writable."""
    configured = environ.get("RUNNER_TERMINATION_LOG")
    if configured is not None:
        return Path(configured) if configured else None
    return DEFAULT_PATH if os.access(DEFAULT_PATH, os.W_OK) else None


def summary(exit_code: int, log: EventLog) -> dict[str, Any]:
    """`{"exit_code", "event", "message", "revisions", "holder"}` from the log's latest events."""
    event, message = log.last_event or ("", "")
    progress = log.latest_messages.get("migrate.progress")
    if exit_code != 0 and progress and event != "migrate.progress":
        message = f"{message} (last progress: {progress})"
    return {
        "exit_code": exit_code,
        "event": event,
        "message": log.mask(message),
        "revisions": list(log.latest_fields.get("revisions") or []),
        "holder": log.latest_fields.get("holder"),
    }


def render(outcome: dict[str, Any], limit: int = LIMIT) -> str:
    """`outcome` as JSON of at most `limit` bytes, its message (then revisions) shortened."""
    text = json.dumps(outcome)
    if len(text.encode()) <= limit:
        return text
    message = str(outcome["message"])

    def fits(keep: int) -> bool:
        shortened = {**outcome, "message": message[:keep] + _CUT}
        return len(json.dumps(shortened).encode()) <= limit

    if not fits(0) and (outcome["revisions"] or outcome["holder"]):
        # Too long even without a message: thousands of revisions.
        return render({**outcome, "revisions": [], "holder": None}, limit)
    low, high = 0, len(message)
    while low < high:  # the longest prefix of the message that fits
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return json.dumps({**outcome, "message": message[:low] + _CUT})


def write_termination_log(
    exit_code: int, environ: Mapping[str, str] = os.environ, log: EventLog = events
) -> None:
    """Write the outcome to the termination log, if there is one; never fails."""
    path = termination_log_path(environ)
    if path is None:
        return
    with contextlib.suppress(OSError):
        path.write_text(render(summary(exit_code, log)))

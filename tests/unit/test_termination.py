"""The termination message: its keys, the 4 KB cut, where it goes, and that it never fails."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from runner import termination
from runner.log import EventLog


def outcome(message: str, revisions: list[str] | None = None) -> dict[str, object]:
    return {"exit_code": 7, "event": "migrate.failed", "message": message,
            "revisions": revisions or [], "holder": {"host": "web-1", "pid": 42, "since": None}}


def test_a_short_summary_is_written_whole() -> None:
    assert json.loads(termination.render(outcome("revision abc failed"))) == outcome(
        "revision abc failed")


@pytest.mark.parametrize("character", ["x", '"', "\\", "é", "\n", "\u2603"])
def test_a_long_message_is_cut_to_4_kb_and_stays_json(character: str) -> None:
    message = "revision abc failed: " + character * 20_000
    text = termination.render(outcome(message))
    assert len(text.encode()) <= termination.LIMIT
    parsed = json.loads(text)
    assert parsed["message"].startswith("revision abc failed: ")
    assert parsed["message"].endswith("...")
    assert parsed["holder"] == {"host": "web-1", "pid": 42, "since": None}
    # As long as it may be: one more character would not fit.
    assert len(text.encode()) > termination.LIMIT - 20


def test_thousands_of_revisions_still_fit() -> None:
    text = termination.render(outcome("applied", [f"{n:012x}" for n in range(1000)]))
    assert len(text.encode()) <= termination.LIMIT
    assert set(json.loads(text)) == {"exit_code", "event", "message", "revisions", "holder"}


def test_written_from_the_latest_events_with_secrets_masked(tmp_path: Path) -> None:
    log = EventLog("json", io.StringIO())
    log.add_secret("s3cret")
    log.emit("lock.waiting", "held elsewhere", holder={"host": "web-2", "pid": 7, "since": "t"})
    log.emit("migrate.applied", "applied 2", revisions=["a1", "b2"])
    log.emit("migrate.failed", "password s3cret rejected", level="error")
    target = tmp_path / "termination-log"
    termination.write_termination_log(7, {"RUNNER_TERMINATION_LOG": str(target)}, log)
    assert json.loads(target.read_text()) == {
        "exit_code": 7, "event": "migrate.failed", "message": "password *** rejected",
        "revisions": ["a1", "b2"], "holder": {"host": "web-2", "pid": 7, "since": "t"},
    }


def test_an_unwritable_or_empty_path_is_ignored(tmp_path: Path) -> None:
    log = EventLog("json", io.StringIO())
    log.emit("migrate.noop", "at head")
    termination.write_termination_log(0, {"RUNNER_TERMINATION_LOG": str(tmp_path / "no" / "f")},
                                      log)
    termination.write_termination_log(0, {"RUNNER_TERMINATION_LOG": str(tmp_path)}, log)
    assert termination.termination_log_path({"RUNNER_TERMINATION_LOG": ""}) is None
    assert not (tmp_path / "no").exists()


def test_the_default_is_the_kubernetes_file_only_when_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = tmp_path / "termination-log"
    monkeypatch.setattr(termination, "DEFAULT_PATH", default)
    assert termination.termination_log_path({}) is None
    default.touch()
    assert termination.termination_log_path({}) == default

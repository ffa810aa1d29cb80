"""The CLI maps every failure to its documented exit code and one line."""

from __future__ import annotations

import pytest

from runner.cli import run_cli
from runner.errors import ExitCode


def test_exit_codes_are_the_contract() -> None:
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0, "UNEXPECTED": 1, "CONFIG": 2, "DATABASE_UNAVAILABLE": 3,
        "LOCK_TIMEOUT": 4, "NOT_AT_HEAD": 5, "REVISIONS_UNUSABLE": 6, "MIGRATION_FAILED": 7,
    }


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["migrate", "--no-such-flag"], ["wait", "--", "--workers", "3"]],
)
def test_usage_errors_exit_2_on_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNNER_LOG_FORMAT", raising=False)
    assert run_cli(argv) == ExitCode.CONFIG
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "config.invalid" in err

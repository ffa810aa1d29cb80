"""The CLI maps every failure to its documented exit code and one line."""

from __future__ import annotations

import importlib.metadata

import pytest

from runner.cli import COMMANDS, run_cli, version
from runner.errors import ExitCode
from runner.settings import SETTINGS, SETTINGS_BY_NAME


def test_exit_codes_are_the_contract() -> None:
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0, "UNEXPECTED": 1, "CONFIG": 2, "DATABASE_UNAVAILABLE": 3,
        "LOCK_TIMEOUT": 4, "NOT_AT_HEAD": 5, "REVISIONS_UNUSABLE": 6, "MIGRATION_FAILED": 7,
        "UNSAFE_MIGRATION": 8,
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


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run_cli(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"migrate-runner {version()}\n"
    assert version() == importlib.metadata.version("migrate-runner")


def command_help(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        run_cli([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_each_offered_setting_with_its_variable_and_default(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = command_help(command, capsys)
    for name in COMMANDS[command].settings:
        setting = SETTINGS_BY_NAME[name]
        if setting.flag is None:
            assert setting.variable not in text
            continue
        assert f"{setting.flag} " in text
        assert f"[{setting.variable}" in text
        assert f"default: {setting.default_text}]" in text
    offered = {setting.flag for setting in SETTINGS if setting.flag and setting.flag in text}
    assert offered == {SETTINGS_BY_NAME[name].flag for name in COMMANDS[command].settings
                       if SETTINGS_BY_NAME[name].flag}


def test_timeouts_are_offered_where_the_command_connects(
    capsys: pytest.CaptureFixture[str]
) -> None:
    migrate_help = command_help("migrate", capsys)
    assert "--wait-timeout" in migrate_help and "RUNNER_WAIT_TIMEOUT; default: 60]" in migrate_help
    assert "--lock-timeout" in migrate_help and "RUNNER_LOCK_TIMEOUT; default: 300]" in migrate_help
    sql_help = command_help("sql", capsys)
    assert "timeout" not in sql_help
    assert run_cli(["sql", "--wait-timeout", "5"]) == ExitCode.CONFIG

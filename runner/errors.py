"""Exit codes and the exception tree: every expected failure is a RunnerError."""

from __future__ import annotations

import enum
from typing import Any


class ExitCode(enum.IntEnum):
    """The process exit codes (docs/reference.md)."""

    OK = 0
    UNEXPECTED = 1
    CONFIG = 2
    DATABASE_UNAVAILABLE = 3
    LOCK_TIMEOUT = 4
    NOT_AT_HEAD = 5
    REVISIONS_UNUSABLE = 6
    MIGRATION_FAILED = 7
    UNSAFE_MIGRATION = 8


class RunnerError(Exception):
    """An expected failure: logged as one line under `event`, then exit with `exit_code`."""

    exit_code: ExitCode = ExitCode.UNEXPECTED
    event = "runner.error"

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields


class ConfigError(RunnerError):
    """A flag, variable, URL, app or migrations directory is unusable."""

    exit_code = ExitCode.CONFIG
    event = "config.invalid"


class DatabaseUnavailable(RunnerError):
    """The database was not reachable in time, or refused us."""

    exit_code = ExitCode.DATABASE_UNAVAILABLE
    event = "db.unavailable"


class LockTimeout(RunnerError):
    """The migration lock was not acquired before the lock deadline."""

    exit_code = ExitCode.LOCK_TIMEOUT
    event = "lock.timeout"


class NotAtHead(RunnerError):
    """`check` found revisions still to apply."""

    exit_code = ExitCode.NOT_AT_HEAD
    event = "check.behind"


class RevisionsUnusable(RunnerError):
    """Several heads, or the database is at a revision the scripts do not know."""

    exit_code = ExitCode.REVISIONS_UNUSABLE
    event = "revisions.unusable"


class MigrationFailed(RunnerError):
    """A migration script raised; the database's own error is in the message."""

    exit_code = ExitCode.MIGRATION_FAILED
    event = "migrate.failed"


class UnsafeMigration(RunnerError):
    """The safety check found an error-level finding (`lint`, or RUNNER_LINT=block)."""

    exit_code = ExitCode.UNSAFE_MIGRATION
    event = "lint.refused"


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived; a BaseException so no `except Exception` swallows it."""

    def __init__(self, signum: int, detail: str = "") -> None:
        super().__init__(signum)
        self.signum = signum
        self.detail = detail

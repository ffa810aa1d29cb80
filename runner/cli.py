"""The `runner` command: parse, dispatch, and map exceptions to exit codes."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, NoReturn

import sqlalchemy as sa

from runner import migrate, offline, revisions, serve, status, wait
from runner.database import error_text
from runner.errors import ConfigError, ExitCode, Interrupted, RunnerError
from runner.log import emit, events
from runner.settings import Settings, load_settings, read_log_format

Command = Callable[[Settings, argparse.Namespace], int]


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    """Wait, migrate under the lock, then exec gunicorn."""
    wait.wait_for_database(settings)
    migrate.migrate(settings)
    serve.exec_gunicorn(settings)


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    """Wait, migrate under the lock, exit."""
    wait.wait_for_database(settings)
    migrate.migrate(settings)
    return ExitCode.OK


def cmd_wait(settings: Settings, args: argparse.Namespace) -> int:
    """Wait until the database accepts connections."""
    wait.wait_for_database(settings)
    return ExitCode.OK


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 when every database is at head, 5 when not."""
    wait.wait_for_database(settings)
    state = revisions.read_state(settings, revisions.load_migrations(settings))
    revisions.require_head(state)
    print(f"at head: {', '.join(state.heads)}")
    return ExitCode.OK


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """Print the current revisions, the heads and the pending revisions."""
    wait.wait_for_database(settings)
    state = revisions.read_state(settings, revisions.load_migrations(settings))
    if args.json:
        print(json.dumps(status.status_json(state)))
    else:
        print(status.status_text(state))
    return ExitCode.OK


def cmd_sql(settings: Settings, args: argparse.Namespace) -> int:
    """Print the offline SQL for a revision range, without connecting."""
    offline.write_sql(settings, sys.stdout, args.from_revision, args.to_revision)
    return ExitCode.OK


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Exec gunicorn without migrating, after the database reaches head if asked."""
    if args.wait_for_head:
        serve.wait_for_head(settings)
    serve.exec_gunicorn(settings)


COMMANDS: dict[str, tuple[Command, str]] = {
    "run": (cmd_run, "wait, migrate under the lock, then exec gunicorn"),
    "migrate": (cmd_migrate, "wait, migrate under the lock, exit"),
    "wait": (cmd_wait, "wait until the database accepts connections"),
    "check": (cmd_check, "exit 0 if the database is at head, 5 if not"),
    "status": (cmd_status, "current revisions, heads and pending revisions"),
    "sql": (cmd_sql, "print the offline SQL for a revision range; never connects"),
    "serve": (cmd_serve, "exec gunicorn without migrating"),
}

GUNICORN_COMMANDS = ("run", "serve")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are ConfigErrors, so they exit 2 on one line."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The parser for every command and its settings flags."""
    parser = _Parser(
        prog="runner",
        description="Wait for the database, migrate under a lock, then exec gunicorn.",
    )
    common = _Parser(add_help=False)
    settings = common.add_argument_group("settings (each also from its environment variable)")
    settings.add_argument("--app", help="Flask import path, e.g. 'app:create_app()' [FLASK_APP]")
    settings.add_argument("--database-url", help="database URL [DATABASE_URL, DATABASE_URL_FILE]")
    settings.add_argument("--directory", help="migrations directory [RUNNER_MIGRATIONS_DIR]")
    settings.add_argument("--wait-timeout", help="seconds to wait for the database [60]")
    settings.add_argument("--lock-timeout", help="seconds to wait for the lock [300]")
    settings.add_argument("--log-format", help="text or json [RUNNER_LOG_FORMAT]")
    settings.add_argument(
        "--allow-newer-database", action="store_const", const=True, default=None,
        help="take a database revision these scripts lack as newer: do not migrate, serve"
        " [RUNNER_ALLOW_NEWER_DATABASE]",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    for name, (_, help_text) in COMMANDS.items():
        usage_tail = " [-- GUNICORN_ARGS]" if name in GUNICORN_COMMANDS else ""
        sub = commands.add_parser(name, parents=[common], help=help_text,
                                  description=help_text + usage_tail)
        sub.set_defaults(command=name)
        if name == "status":
            sub.add_argument("--json", action="store_true", help="print one JSON object")
        elif name == "sql":
            sub.add_argument("--from", dest="from_revision", metavar="REV",
                             help="start after REV (default: the base)")
            sub.add_argument("--to", dest="to_revision", metavar="REV",
                             help="end at REV (default: head)")
        elif name == "serve":
            sub.add_argument("--wait-for-head", action="store_true",
                             help="first wait, under the wait timeout, for the database to"
                             " reach head")
    return parser


def run_cli(argv: Sequence[str]) -> int:
    """Run one command line and return its exit code."""
    arguments = list(argv)
    gunicorn_args: list[str] = []
    if "--" in arguments:
        cut = arguments.index("--")
        arguments, gunicorn_args = arguments[:cut], arguments[cut + 1 :]
    _install_signal_handlers()
    try:
        # Known before parsing, so that even a usage error comes out in the chosen format.
        events.format = read_log_format({})
        args = build_parser().parse_args(arguments)
        if gunicorn_args and args.command not in GUNICORN_COMMANDS:
            raise ConfigError(f"'runner {args.command}' takes no gunicorn arguments after '--'")
        flags: dict[str, Any] = vars(args)
        flags["gunicorn_args"] = gunicorn_args
        events.format = read_log_format(flags)
        settings = load_settings(flags)
        command, _ = COMMANDS[args.command]
        return command(settings, args)
    except RunnerError as error:
        emit(error.event, error.message, level="error", exit_code=int(error.exit_code),
             **error.fields)
        return error.exit_code
    except sa.exc.OperationalError as error:
        # The database went away after it had answered: the same verdict as never answering.
        emit("db.unavailable", f"lost the database: {error_text(error)}", level="error",
             exit_code=int(ExitCode.DATABASE_UNAVAILABLE))
        return ExitCode.DATABASE_UNAVAILABLE
    except Interrupted as stop:
        name = signal.Signals(stop.signum).name
        emit("runner.interrupted", f"stopped by {name}", level="warning", signal=name)
        return 128 + stop.signum
    except Exception:
        emit("runner.crashed", "unexpected error, a bug: please report it with this traceback",
             level="critical", traceback=traceback.format_exc())
        return ExitCode.UNEXPECTED


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The console script: run the command line and exit with its code."""
    sys.exit(run_cli(sys.argv[1:] if argv is None else argv))


def _install_signal_handlers() -> None:
    def stop(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)

"""The `runner` command: parse, dispatch, and map exceptions to exit codes."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

# Each command imports what it uses when it runs: a replica at head must not pay for
# Flask, SQLAlchemy or Alembic.
import runner
from runner import database, signals, termination
from runner.app import AppNotReady
from runner.errors import ConfigError, ExitCode, Interrupted, RunnerError
from runner.log import AppLogHandler, app_output_captured, emit, events
from runner.settings import ATTEMPT, SETTINGS, STARTED_AT, Settings, read_log_format, resolve
from runner.wait import MAX_DELAY


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    """Wait, migrate under the lock, then exec gunicorn."""
    from runner import migration, serve

    migration.migrate(settings)
    serve.exec_gunicorn(settings)


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    """Wait, migrate under the lock, exit."""
    from runner import migration

    migration.migrate(settings)
    return ExitCode.OK


def cmd_wait(settings: Settings, args: argparse.Namespace) -> int:
    """Wait until every database accepts connections."""
    from runner import wait

    wait.wait_for_databases(settings)
    return ExitCode.OK


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 when every database is at head, 5 when not."""
    from runner import status

    heads = status.check(settings)
    print(f"at head: {', '.join(heads)}", file=args.out)
    return ExitCode.OK


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """Print the current revisions, the heads and the pending revisions."""
    from runner import status

    state, holder = status.read_status(settings)
    if args.json:
        print(json.dumps(status.status_json(state, holder)), file=args.out)
    else:
        print(status.status_text(state, holder), file=args.out)
    return ExitCode.OK


def cmd_sql(settings: Settings, args: argparse.Namespace) -> int:
    """Print the offline SQL for a revision range, without connecting."""
    from runner import offline, revisions

    offline.write_sql(revisions.load(settings), args.out, args.from_revision, args.to_revision)
    return ExitCode.OK


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    """Exec gunicorn without migrating, after the database reaches head if asked."""
    from runner import serve

    if args.wait_for_head:
        serve.wait_for_head(settings)
    serve.exec_gunicorn(settings)


def cmd_prepare(settings: Settings, args: argparse.Namespace) -> int:
    """Load the app, and record what only it knows for the fast start."""
    from runner import manifest, revisions

    migrations = revisions.load(settings)
    if migrations.app.migrated_itself:
        emit("app.migrated", "the app migrated a database itself while it loaded"
             f" ({', '.join(migrations.app.migrated_itself)}): runner prepare needs no"
             " database; give the build none, or keep the factory from migrating",
             level="warning")
    written = manifest.write(manifest.make(migrations, migrations.version_table,
                                           settings.directory))
    emit("prepare.written", f"recorded the app's migration configuration in {written}",
         path=str(written), heads=sorted(migrations.history.heads))
    return ExitCode.OK


def cmd_lint(settings: Settings, args: argparse.Namespace) -> int:
    """Judge the pending revisions (or a range) statement by statement; exit 8 on an error."""
    from runner import safety

    report = safety.lint_command(settings, args.from_revision, args.to_revision, args.offline)
    from runner.lint import render_report

    args.out.write(render_report(report, args.format))
    return ExitCode.UNSAFE_MIGRATION if report.has_errors else ExitCode.OK


@dataclass(frozen=True)
class Command:
    """A subcommand: what it runs, its help, the settings it offers, whether gunicorn follows."""

    run: Callable[[Settings, argparse.Namespace], int]
    help: str
    settings: tuple[str, ...]
    gunicorn: bool = False


_APP = ("app", "database_url", "directory", "log_format")
_CONNECTED = (*_APP, "migration_database_url", "wait_timeout", "allow_newer_database")
_MIGRATING = (*_CONNECTED, "lock_timeout", "ddl_lock_timeout", "stop_timeout", "lint")

COMMANDS: dict[str, Command] = {
    "run": Command(cmd_run, "wait, migrate under the lock, then exec gunicorn", _MIGRATING,
                   gunicorn=True),
    "migrate": Command(cmd_migrate, "wait, migrate under the lock, exit", _MIGRATING),
    "wait": Command(cmd_wait, "wait until the database accepts connections",
                    (*_APP, "migration_database_url", "wait_timeout")),
    "check": Command(cmd_check, "exit 0 if the database is at head, 5 if not", _CONNECTED),
    "status": Command(cmd_status, "current revisions, heads and pending revisions", _CONNECTED),
    "sql": Command(cmd_sql, "print the offline SQL for a revision range; never connects", _APP),
    "serve": Command(cmd_serve, "exec gunicorn without migrating", _CONNECTED, gunicorn=True),
    "lint": Command(cmd_lint, "judge the pending revisions (or a range) statement by"
                    " statement against the live tables; exit 8 on an error-level finding",
                    _CONNECTED),
    "prepare": Command(cmd_prepare, "load the app once and record what only it knows"
                       " (migrations, version table, heads) for the fast start; never"
                       " connects", _APP),
}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are ConfigErrors, so they exit 2 on one line."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The parser for every command and the settings it offers, from the settings table."""
    parser = _Parser(
        prog="runner",
        description="Wait for the database, migrate under a lock, then exec gunicorn.",
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    for name, command in COMMANDS.items():
        usage_tail = " [-- GUNICORN_ARGS]" if command.gunicorn else ""
        sub = commands.add_parser(name, help=command.help,
                                  description=command.help + usage_tail)
        sub.set_defaults(command=name)
        group = sub.add_argument_group(
            "settings (a flag wins over its environment variable, which wins over .flaskenv/.env)")
        for setting in SETTINGS:
            if setting.name not in command.settings or setting.flag is None:
                continue
            variables = " or ".join(filter(None, (setting.variable, setting.file_variable)))
            help_text = f"{setting.help} [{variables}; default: {setting.default_text}]"
            if setting.switch:
                group.add_argument(setting.flag, dest=setting.name, action="store_const",
                                   const=True, default=None, help=help_text)
            else:
                group.add_argument(setting.flag, dest=setting.name, help=help_text)
        if name == "status":
            sub.add_argument("--json", action="store_true", help="print one JSON object")
        elif name in ("sql", "lint"):
            start = "the database's revision" if name == "lint" else "the base"
            sub.add_argument("--from", dest="from_revision", metavar="REV",
                             help=f"start after REV (default: {start})")
            sub.add_argument("--to", dest="to_revision", metavar="REV",
                             help="end at REV (default: head)")
        if name == "lint":
            sub.add_argument("--offline", action="store_true",
                             help="never connect: sizes unknown (counted as large), the"
                             " server version assumed; every revision unless --from")
            sub.add_argument("--format", choices=("text", "json", "github"), default="text",
                             help="text (one line a finding, then the fix), json, or GitHub"
                             " workflow annotations")
        elif name == "serve":
            sub.add_argument("--wait-for-head", action="store_true",
                             help="first wait, under the wait timeout, for the database to"
                             " reach head")
    return parser


def version() -> str:
    """The installed distribution's version, or the source tree's."""
    import importlib.metadata  # 15 ms: only for --version, never on a start

    try:
        return importlib.metadata.version("migrate-runner")
    except importlib.metadata.PackageNotFoundError:
        return runner.__version__


class _Version(argparse.Action):
    """`--version`: print `migrate-runner VERSION` on stdout and exit 0."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"migrate-runner {version()}")
        parser.exit()


def run_cli(argv: Sequence[str], export_environment: bool = False) -> int:
    """Run one command line and return its exit code.

    With `export_environment` (the console entry point), os.environ becomes the environment
    the settings give the app: .flaskenv/.env and the normalized DATABASE_URL.
    """
    arguments = list(argv)
    original_environment = dict(os.environ)
    gunicorn_args: list[str] = []
    if "--" in arguments:
        cut = arguments.index("--")
        arguments, gunicorn_args = arguments[:cut], arguments[cut + 1 :]
    try:
        # Known before parsing, so that even a usage error comes out in the chosen format.
        events.format = read_log_format(os.environ)
        args = build_parser().parse_args(arguments)
        command = COMMANDS[args.command]
        if gunicorn_args and not command.gunicorn:
            raise ConfigError(f"'runner {args.command}' takes no gunicorn arguments after '--'")
        flags: dict[str, Any] = vars(args)
        flags["gunicorn_args"] = gunicorn_args
        settings = resolve(flags)
        events.format = settings.log_format
        if export_environment:
            os.environ.clear()
            os.environ.update(settings.app_environment)
        # stdout carries the command's result only: what the app prints while it loads
        # and while its env.py runs goes to stderr (in JSON format, as events).
        args.out = sys.stdout
        with app_output_captured(events):
            return command.run(settings, args)
    except RunnerError as error:
        if isinstance(error, AppNotReady) and export_environment:
            _load_again(settings, error, argv, original_environment)  # returns when out of time
        emit(error.event, error.message, level="error", exit_code=int(error.exit_code),
             **error.fields)
        return error.exit_code
    except Interrupted as stop:
        name = signal.Signals(stop.signum).name
        detail = f": {stop.detail}" if stop.detail else ""
        emit("runner.interrupted", f"stopped by {name}{detail}", level="warning", signal=name)
        return 128 + stop.signum
    except Exception as error:
        if database.is_connection_error(error):
            # The database went away after it had answered: the same verdict as never
            # answering. (A statement of ours that fails is a bug, below.)
            emit("db.unavailable", f"lost the database: {database.error_text(error)}",
                 level="error", exit_code=int(ExitCode.DATABASE_UNAVAILABLE))
            return ExitCode.DATABASE_UNAVAILABLE
        emit("runner.crashed", "unexpected error, a bug: please report it with this traceback",
             level="critical", traceback=traceback.format_exc())
        return ExitCode.UNEXPECTED


def _load_again(settings: Settings, error: AppNotReady, argv: Sequence[str],
                environment: dict[str, str]) -> None:
    """Try to load the app again after a pause, in a new process (the same pid): a factory
    may run only once in one process. Within RUNNER_WAIT_TIMEOUT from the first start;
    returns when it has run out."""
    attempt = int(environment.get(ATTEMPT) or 1)
    delay = min(MAX_DELAY, 0.1 * 2 ** (attempt - 1))
    if settings.remaining(settings.wait_timeout) <= delay:
        return
    emit("db.waiting", f"the app's database is not ready (attempt {attempt}), loading it"
         f" again in {delay:.2f}s", level="warning", attempt=attempt, delay=round(delay, 3),
         error=error.fields.get("error", ""))
    signals.sleep(delay)
    sys.stdout.flush()
    sys.stderr.flush()
    started_at = time.time() - (time.monotonic() - settings.started)
    os.execve(sys.executable, [sys.executable, "-m", "runner", *argv],
              {**environment, STARTED_AT: repr(started_at), ATTEMPT: str(attempt + 1)})


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The console script: the only place that changes the process (environment, signal
    handlers, the root logger, the garbage collector); runs the command line, then exits hard.

    A hard exit after flushing, so that a non-daemon thread the app started cannot keep
    the process (an init container) alive, and no interpreter teardown: a third of a short
    command's CPU went to the collector at exit. The commands that succeed by exec never
    get here.
    """
    # Start-up creates objects that live as long as the process (modules, the app): collect
    # rarely, so that loading them is not scanned over and over.
    gc.set_threshold(50_000, 50, 1_000)
    # The app's own log records, and its warnings, while the runner loads it and migrates,
    # in the runner's format.
    logging.getLogger().addHandler(AppLogHandler())
    logging.captureWarnings(True)
    with signals.handlers_installed():
        code = run_cli(sys.argv[1:] if argv is None else argv, export_environment=True)
    # Only when the runner itself ends: after an exec, gunicorn's exit is gunicorn's to report.
    termination.write_termination_log(code)
    signals.exit_now(code)

"""The docs cannot drift from the code.

docs/reference.md names every command and flag the parser has, every setting's variable,
every event the code can emit (in its events table) and every exit code (in its exit code
table); and every relative link of the README and the docs leads to a file, and to a
heading there when it names one. No database, no subprocess: the parser is built here and
the events are found by reading runner/'s source, so a new `emit("x.y", ...)` anywhere fails
this test until the event is documented.
"""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.cli import COMMANDS, build_parser
from runner.errors import ExitCode
from runner.settings import SETTINGS, Setting

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "runner"
REFERENCE = REPO / "docs" / "reference.md"
LINKED_FILES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md"),
                       REPO / "deploy" / "kubernetes" / "README.md"])

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", re.MULTILINE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def reference() -> str:
    return REFERENCE.read_text(encoding="utf-8")


def section(markdown: str, title: str) -> str:
    """The text under the `## title` heading, up to the next heading of level 2."""
    found = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", markdown,
                      re.MULTILINE | re.DOTALL)
    assert found, f"no '## {title}' section"
    return found.group(1)


def first_cells(text: str) -> list[str]:
    """The first cell of every body row of the Markdown tables in `text`."""
    cells = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|") or re.fullmatch(r"\|[\s:|-]+\|?", line):
            continue
        cells.append(re.split(r"(?<!\\)\|", line)[1].strip())
    return cells[1:] if cells else cells  # the header row


def backticked(text: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", text))


def mentions(text: str, name: str) -> bool:
    """`name` in backticks, alone or followed by an argument (`--from REV`)."""
    return re.search(rf"`{re.escape(name)}(?:[ =][^`]*)?`", text) is not None


# (a) commands and flags -------------------------------------------------------------------

def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("the runner's parser has no commands")


def long_flags(parser: argparse.ArgumentParser) -> list[str]:
    """The flags `--help` lists, `-h/--help` itself left out."""
    return [option for action in parser._actions if not isinstance(action, argparse._HelpAction)
            for option in action.option_strings if option.startswith("--")]


PARSER = build_parser()
COMMAND_PARSERS = subcommands(PARSER)


def test_the_parser_offers_exactly_the_commands() -> None:
    assert set(COMMAND_PARSERS) == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_is_in_the_reference(command: str) -> None:
    commands = section(reference(), "Commands")
    assert re.search(rf"`runner {command}\b", commands), (
        f"'runner {command}' is missing from the commands table of docs/reference.md")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_flag_of_every_command_is_in_the_reference(command: str) -> None:
    text = reference()
    missing = [flag for flag in long_flags(COMMAND_PARSERS[command]) if not mentions(text, flag)]
    assert not missing, (
        f"'runner {command} --help' offers {', '.join(missing)}, which docs/reference.md"
        " does not name")


def test_the_top_level_flags_are_in_the_reference() -> None:
    text = reference()
    assert [flag for flag in long_flags(PARSER) if not mentions(text, flag)] == []


def test_every_flag_is_found() -> None:
    """The scan above sees the flags it must: a guard against a vacuous pass."""
    assert {"--app", "--lint", "--json", "--offline", "--format", "--wait-for-head"} <= {
        flag for parser in COMMAND_PARSERS.values() for flag in long_flags(parser)}


# (b) settings -----------------------------------------------------------------------------

@pytest.mark.parametrize("setting", SETTINGS, ids=lambda setting: setting.name)
def test_every_setting_is_in_the_settings_table(setting: Setting) -> None:
    settings = section(reference(), "Settings")
    names = [setting.variable, setting.file_variable, setting.flag]
    missing = [name for name in names if name and f"`{name}`" not in settings]
    assert not missing, f"the settings table of docs/reference.md lacks {', '.join(missing)}"


# (c) log events ---------------------------------------------------------------------------

def python_files() -> Iterator[Path]:
    yield from sorted(RUNNER.rglob("*.py"))


def emitted_by_calls() -> set[str]:
    """Every event named by a literal in an `emit(...)` or `x.emit(...)` call in runner/."""
    found = set()
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            function = node.func
            name = function.id if isinstance(function, ast.Name) else (
                function.attr if isinstance(function, ast.Attribute) else None)
            first = node.args[0]
            if name == "emit" and isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.add(first.value)
    return found


def error_events() -> set[str]:
    """The `event = "..."` of every exception class in runner/errors.py but the base's
    default, which no code raises on its own (checked below)."""
    tree = ast.parse((RUNNER / "errors.py").read_text(encoding="utf-8"))
    found = set()
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or node.name == "RunnerError":
            continue
        for statement in node.body:
            if (isinstance(statement, ast.Assign)
                    and any(isinstance(target, ast.Name) and target.id == "event"
                            for target in statement.targets)
                    and isinstance(statement.value, ast.Constant)):
                found.add(str(statement.value.value))
    return found


def gunicorn_events() -> set[str]:
    """gunicorn's loggers, whose records the default gunicorn config formats as events."""
    source = (RUNNER / "gunicorn_config.py").read_text(encoding="utf-8")
    return set(re.findall(r'"(gunicorn\.[a-z]+)"\s*:', source))


def emitted_events() -> set[str]:
    return emitted_by_calls() | error_events() | gunicorn_events()


def documented_events() -> set[str]:
    events = set()
    for cell in first_cells(section(reference(), "Log events")):
        events |= backticked(cell)
    return events


def test_the_event_scan_finds_the_events() -> None:
    """A guard against a scan that finds nothing and so passes whatever the docs say."""
    assert {"db.ready", "db.waiting", "migrate.progress", "alembic", "app.output",
            "config.invalid", "lint.refused", "gunicorn.access"} <= emitted_events()


def test_no_code_raises_the_base_error_with_its_default_event() -> None:
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            assert not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                        and node.func.id == "RunnerError"), f"{path}:{node.lineno}"


def test_every_event_the_code_can_emit_is_in_the_events_table() -> None:
    missing = sorted(emitted_events() - documented_events())
    assert not missing, f"the events table of docs/reference.md lacks {', '.join(missing)}"


def test_every_event_in_the_events_table_is_emitted() -> None:
    stale = sorted(documented_events() - emitted_events())
    assert not stale, f"docs/reference.md documents events no code emits: {', '.join(stale)}"


# (d) exit codes ---------------------------------------------------------------------------

def documented_exit_codes() -> set[int]:
    codes = set()
    for cell in first_cells(section(reference(), "Exit codes")):
        codes |= {int(number) for number in re.findall(r"\d+", cell)}
    return codes


def test_every_exit_code_is_in_the_exit_code_table() -> None:
    missing = sorted(int(code) for code in ExitCode if int(code) not in documented_exit_codes())
    assert not missing, f"the exit code table of docs/reference.md lacks {missing}"


def test_the_exit_code_table_has_no_other_codes() -> None:
    signals = {130, 143}  # 128 + SIGINT, 128 + SIGTERM
    assert documented_exit_codes() - signals == {int(code) for code in ExitCode}


# the safety check's rules ------------------------------------------------------------------

def test_every_lint_rule_is_in_the_reference_and_the_readme_table() -> None:
    from runner.lint.rules import RULES

    listed = backticked(section(reference(), "The safety check's rules"))
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = set()
    for cell in first_cells(section(readme, "Migration safety")):
        table |= backticked(cell)
    assert sorted(set(RULES) - listed) == [], "docs/reference.md lacks these rules"
    assert sorted(set(RULES) - table) == [], "the README's rule table lacks these rules"
    assert sorted(table - set(RULES)) == [], "the README's rule table names unknown rules"


# (e) links --------------------------------------------------------------------------------

def prose(markdown: str) -> str:
    """The Markdown without code blocks and code spans, where nothing is a link."""
    return CODE_SPAN.sub("", FENCE.sub("", markdown))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file (repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for _, heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    return [target for target in LINK.findall(prose(path.read_text(encoding="utf-8")))
            if not SCHEME.match(target)]


def test_the_link_scan_finds_links() -> None:
    assert "docs/reference.md" in relative_links(REPO / "README.md")
    assert slug("Why a pod failed: the termination message") == (
        "why-a-pod-failed-the-termination-message")
    assert slug("The app: FLASK_APP") == "the-app-flask_app"


@pytest.mark.parametrize("path", LINKED_FILES, ids=lambda path: str(path.relative_to(REPO)))
def test_every_relative_link_resolves(path: Path) -> None:
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{path.relative_to(REPO)}: broken links: {', '.join(broken)}"


# The product's docs stand on their own ------------------------------------------------------

@pytest.mark.parametrize("path", LINKED_FILES, ids=lambda path: str(path.relative_to(REPO)))
def test_the_docs_point_at_nothing_outside_the_project(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "DESIGN.md" not in text and "../shared" not in text

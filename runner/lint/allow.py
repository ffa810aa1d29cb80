"""Acknowledgements written in a revision file: `# runner: allow RULE[, RULE...] -- reason`.

A comment acknowledges its rules for the whole revision when it sits inside `upgrade()` (or
an `upgrade_<bind>()` of a multi-database revision), and for the one operation on its line
when it sits elsewhere (a helper the revision calls). The reason after ` -- ` is required:
a comment without one acknowledges nothing, and the finding it meant to cover says so in
its message, so that the author sees why it still counts. No other finding is emitted for
it: the rule ids are squawk's, and a reason is the author's to write.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass

ALLOW_COMMENT = re.compile(
    r"#\s*runner:\s*allow\s+(?P<rules>[a-z0-9-]+(?:\s*,\s*[a-z0-9-]+)*)"
    r"(?:\s+--(?P<reason>.*))?$"
)


@dataclass(frozen=True)
class Allowance:
    """One `# runner: allow` comment."""

    rules: frozenset[str]
    line: int
    reason: str | None
    """None: written without a reason, so it does not count."""
    in_upgrade: bool


@dataclass(frozen=True)
class Allowances:
    """The acknowledgements of one revision file."""

    comments: tuple[Allowance, ...] = ()

    def allows(self, rule: str, line: int | None) -> bool:
        """Whether a finding of `rule` at `line` is acknowledged with a reason."""
        return any(
            rule in comment.rules and comment.reason is not None
            and (comment.in_upgrade or comment.line == line)
            for comment in self.comments
        )

    def without_reason(self, rule: str, line: int | None) -> Allowance | None:
        """A comment that would acknowledge the finding but gives no reason."""
        for comment in self.comments:
            if rule in comment.rules and comment.reason is None and (
                comment.in_upgrade or comment.line == line
            ):
                return comment
        return None


def read_allowances(path: str) -> Allowances:
    """The `# runner: allow` comments of a revision file (none when it cannot be read)."""
    try:
        with open(path, encoding="utf-8") as source_file:
            source = source_file.read()
    except OSError:
        return Allowances()
    if "runner:" not in source:
        return Allowances()
    return allowances_in(source)


def allowances_in(source: str) -> Allowances:
    """The `# runner: allow` comments of a revision's source text."""
    spans = _upgrade_spans(source)
    comments = []
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return Allowances()
    for token in tokens:
        if token.type != tokenize.COMMENT:
            continue
        found = ALLOW_COMMENT.search(token.string)
        if found is None:
            continue
        line, column = token.start
        rules = frozenset(rule.strip() for rule in found.group("rules").split(","))
        comments.append(Allowance(
            rules=rules, line=line, reason=(found.group("reason") or "").strip() or None,
            # An indented comment after the function's last statement is still inside it.
            in_upgrade=any(first <= line <= last or (last < line < following and column > 0)
                           for first, last, following in spans),
        ))
    return Allowances(tuple(comments))


def _upgrade_spans(source: str) -> list[tuple[int, int, int]]:
    """The module-level upgrade() and upgrade_<bind>() functions: first line, last line,
    and the line of the next module-level statement (or past the end)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    spans = []
    for index, node in enumerate(tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
            node.name == "upgrade" or node.name.startswith("upgrade_")
        ):
            following = tree.body[index + 1] if index + 1 < len(tree.body) else None
            next_line = (min([following.lineno, *(d.lineno for d in getattr(
                following, "decorator_list", []))]) if following else source.count("\n") + 2)
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            spans.append((first, node.end_lineno or node.lineno, next_line))
    return spans

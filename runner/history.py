"""Where a database stands against its migration scripts: the one definition of "at head".

Imports nothing heavy: a start decides from a manifest's heads without Alembic.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from runner.errors import RevisionsUnusable
from runner.log import emit


class Verdict(enum.Enum):
    """Where a database stands against the scripts."""

    AT_HEAD = "at head"
    BEHIND = "behind"
    AHEAD = "ahead"
    """At a revision the scripts do not know: a newer release migrated it."""


@dataclass(frozen=True)
class History:
    """What the migration scripts say: their head, and every revision they know."""

    heads: frozenset[str]
    known: frozenset[str]

    @classmethod
    def of(cls, script: Any) -> History:
        """The history of an Alembic ScriptDirectory (not imported here: it is heavy)."""
        return cls(heads=frozenset(script.get_heads()),
                   known=frozenset(revision.revision for revision in script.walk_revisions()))

    def verdict(self, current: Iterable[str]) -> Verdict:
        """The one definition of "at head" and "ahead" (migrate, check, serve, /readyz)."""
        current = set(current)
        if current == self.heads:
            return Verdict.AT_HEAD
        return Verdict.AHEAD if current - self.known else Verdict.BEHIND

    def unknown(self, current: Iterable[str]) -> tuple[str, ...]:
        """The revisions of `current` these scripts do not have."""
        return tuple(revision for revision in current if revision not in self.known)


def judge_newer(name: str, history: History, current: Sequence[str], allow: bool) -> None:
    """A database ahead of the scripts: RevisionsUnusable, or with `allow`
    (RUNNER_ALLOW_NEWER_DATABASE) a warning, the database then taken as at head."""
    unknown = history.unknown(current)
    if not allow:
        raise RevisionsUnusable(
            f"{name} is at revision {', '.join(unknown)}, which these migration scripts"
            " do not have: this image is older than the database (a newer release migrated"
            " it); deploy that release, or set RUNNER_ALLOW_NEWER_DATABASE=true to run"
            " this older release against it without migrating",
            revisions=list(unknown),
        )
    emit("revisions.newer", f"{name} is at {', '.join(unknown)}, newer than these"
         " scripts: taken as at head (RUNNER_ALLOW_NEWER_DATABASE)", level="warning",
         revisions=list(unknown))

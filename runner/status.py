"""`check` and `status`: where the databases stand, as a person reads it and as JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner import wait
from runner.drivers import Holder
from runner.settings import Settings
from runner.target import target_for

if TYPE_CHECKING:
    from runner.revisions import RevisionState


def check(settings: Settings) -> tuple[str, ...]:
    """The heads when every database is at head; NotAtHead (naming what is pending) if not.
    With a valid manifest, one query at head; behind, the app tells what is pending."""
    target = target_for(settings)
    with wait.connected(settings, target.url, target.table, target.source) as driver:
        if target.history is not None and target.at_head(settings, driver):
            return tuple(sorted(target.history.heads))
        from runner.revisions import read_state, require_head

        state = read_state(target.app_migrations(settings), settings.allow_newer_database)
    require_head(state)
    return state.heads


def read_status(settings: Settings) -> tuple[RevisionState, Holder | None]:
    """Every database's revisions, and who holds the migration lock (None: nobody)."""
    from runner.revisions import read_state

    target = target_for(settings)
    with wait.connected(settings, target.url, target.table, target.source) as driver:
        state = read_state(target.app_migrations(settings), settings.allow_newer_database)
        return state, driver.holder()


def status_json(state: RevisionState, migration: Holder | None = None) -> dict[str, Any]:
    """`{"current", "heads", "pending"}`, each database's own revisions, and any migration
    in progress: `{"in_progress": true, "holder": {...}}`, or null."""
    return {
        "current": list(state.current),
        "heads": list(state.heads),
        "pending": [script.revision for script in state.pending],
        "databases": [
            {"name": db.name, "current": list(db.current), "ahead": list(db.ahead)}
            for db in state.databases
        ],
        "migration": {"in_progress": True, "holder": migration.as_dict()} if migration else None,
    }


def status_text(state: RevisionState, migration: Holder | None = None) -> str:
    """Lines in the manner of `flask db current`, `heads` and `history`."""
    lines = []
    for db in state.databases:
        current = ", ".join(db.current) or "base (empty)"
        lines.append(f"database {db.name}: {current}")
        if db.ahead:
            lines.append(f"  ahead of these scripts: {', '.join(db.ahead)} is unknown to them")
    lines.append(f"head: {', '.join(state.heads) or '(no revisions)'}")
    if state.pending:
        lines.append(f"pending ({len(state.pending)}, in the order they apply):")
        lines.extend(
            "  " + script.cmd_format(False, include_branches=True, include_doc=True,
                                     include_parents=True, tree_indicators=True)
            for script in state.pending
        )
    else:
        lines.append("pending: none, at head")
    if migration:
        lines.append(f"migration in progress: lock held by {migration.describe()}")
    return "\n".join(lines)

"""The revision state as a person reads it, and as JSON for scripts."""

from __future__ import annotations

from typing import Any

from runner.locks import Holder
from runner.migration import open_migration_lock
from runner.revisions import RevisionState
from runner.settings import Settings


def migration_holder(settings: Settings, state: RevisionState) -> Holder | None:
    """Who holds the migration lock, i.e. runs a migration right now; None when nobody."""
    try:
        lock = open_migration_lock(settings, state)
    except OSError:
        # A SQLite lock file this process may not create: reading the state needs no more.
        return None
    with lock:
        return lock.holder()


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

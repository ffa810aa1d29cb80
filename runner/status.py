"""The revision state as a person reads it, and as JSON for scripts."""

from __future__ import annotations

from typing import Any

from runner.revisions import RevisionState


def status_json(state: RevisionState) -> dict[str, Any]:
    """`{"current", "heads", "pending"}` of DESIGN.md, plus each database's own revisions."""
    return {
        "current": list(state.current),
        "heads": list(state.heads),
        "pending": [script.revision for script in state.pending],
        "databases": [
            {"name": db.name, "current": list(db.current), "ahead": list(db.ahead)}
            for db in state.databases
        ],
    }


def status_text(state: RevisionState) -> str:
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
    return "\n".join(lines)

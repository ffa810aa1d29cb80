"""Liveness and readiness probes for the app: `app.register_blueprint(health_blueprint())`.

``GET /healthz`` answers 200 while the process serves. ``GET /readyz`` answers 200
when every database of the app (the default one and each bind) is reachable and at the
migration scripts' head or past it (a newer release migrated it, as in a rolling
update), and 503 naming the reason otherwise; both with a JSON body. Cheap enough for
a probe every few seconds: the scripts are read once per app, then each probe runs one
short query per database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Blueprint, Flask, current_app, jsonify
from flask.typing import ResponseReturnValue

_EXTENSION = "runner.health"


@dataclass(frozen=True)
class _Scripts:
    heads: frozenset[str]
    known: frozenset[str]


def health_blueprint(name: str = "health") -> Blueprint:
    """A blueprint with GET /healthz and GET /readyz, for Docker HEALTHCHECKs and probes."""
    blueprint = Blueprint(name, __name__)

    @blueprint.get("/healthz")
    def healthz() -> ResponseReturnValue:
        return jsonify(status="ok")

    @blueprint.get("/readyz")
    def readyz() -> ResponseReturnValue:
        app = current_app
        try:
            scripts = _scripts(app)
        except Exception as exc:  # a broken migrations directory: not ready, and say so
            return jsonify(status="unavailable", reason="migration scripts unreadable",
                           error=type(exc).__name__), 503
        databases = {name: _database_state(engine, scripts, _version_table_opts(app))
                     for name, engine in _engines(app)}
        failing = [(name, state) for name, state in databases.items() if "reason" in state]
        body: dict[str, Any] = {"heads": sorted(scripts.heads), "databases": databases}
        if failing:
            name, state = failing[0]
            return jsonify(status="unavailable", reason=state["reason"], database=name,
                           **body), 503
        return jsonify(status="ready", **body)

    return blueprint


def _scripts(app: Flask) -> _Scripts:
    """The app's migration heads and every revision its scripts know, read once per app."""
    cached: _Scripts | None = app.extensions.get(_EXTENSION)
    if cached is None:
        migrate = app.extensions["migrate"]
        # The directory of this app's Migrate: get_config() alone would take the one
        # of whichever app called init_app last.
        script = ScriptDirectory.from_config(migrate.migrate.get_config(migrate.directory))
        cached = _Scripts(heads=frozenset(script.get_heads()),
                          known=frozenset(rev.revision for rev in script.walk_revisions()))
        app.extensions[_EXTENSION] = cached
    return cached


def _engines(app: Flask) -> list[tuple[str, sa.engine.Engine]]:
    """The app's engines by name ("default", then each bind key), in a stable order."""
    engines = app.extensions["migrate"].db.engines
    return sorted(((str(key or "default"), engine) for key, engine in engines.items()),
                  key=lambda item: (item[0] != "default", item[0]))


def _database_state(
    engine: sa.engine.Engine, scripts: _Scripts, opts: dict[str, Any]
) -> dict[str, Any]:
    """One database's revisions; with a `reason` when it is not ready."""
    try:
        with engine.connect() as connection:
            current = frozenset(
                MigrationContext.configure(connection, opts=opts).get_current_heads())
    except sa.exc.SQLAlchemyError as exc:
        return {"reason": "database unreachable", "error": type(exc).__name__}
    state: dict[str, Any] = {"current": sorted(current)}
    # Revisions these scripts do not know were applied by a newer release: this one
    # keeps serving until it is replaced.
    if current and current.isdisjoint(scripts.known):
        return {**state, "ahead": True}
    if current != scripts.heads:
        return {**state, "reason": "database not at head"}
    return state


def _version_table_opts(app: Flask) -> dict[str, Any]:
    """The version table options the app gave Migrate, for MigrationContext."""
    configure_args = app.extensions["migrate"].configure_args
    return {key: configure_args[key] for key in ("version_table", "version_table_schema")
            if configure_args.get(key) is not None}

"""Liveness and readiness probes for the app: `app.register_blueprint(health_blueprint())`.

``GET /healthz`` answers 200 while the process serves. ``GET /readyz`` answers 200
when every database of the app (the default one and each bind) is reachable and at the
migration scripts' head or past it (a newer release migrated it, as in a rolling
update), and 503 naming the reason otherwise; both with a JSON body. Cheap enough for
a probe every few seconds: the scripts are read once per app, then each probe runs one
short query per database.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from flask import Blueprint, Flask, current_app, jsonify
from flask.typing import ResponseReturnValue

from runner.drivers import VersionTable
from runner.history import History, Verdict

_EXTENSION = "runner.health"


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
            history = _history(app)
        except Exception as exc:  # a broken migrations directory: not ready, and say so
            return jsonify(status="unavailable", reason="migration scripts unreadable",
                           error=type(exc).__name__), 503
        databases = {name: _database_state(engine, history, _version_table(app))
                     for name, engine in _engines(app)}
        failing = [(name, state) for name, state in databases.items() if "reason" in state]
        body: dict[str, Any] = {"heads": sorted(history.heads), "databases": databases}
        if failing:
            name, state = failing[0]
            return jsonify(status="unavailable", reason=state["reason"], database=name,
                           **body), 503
        return jsonify(status="ready", **body)

    return blueprint


def _history(app: Flask) -> History:
    """The app's migration heads and every revision its scripts know, read once per app."""
    cached: History | None = app.extensions.get(_EXTENSION)
    if cached is None:
        migrate = app.extensions["migrate"]
        # The directory of this app's Migrate: get_config() alone would take the one
        # of whichever app called init_app last.
        cached = History.of(
            ScriptDirectory.from_config(migrate.migrate.get_config(migrate.directory)))
        app.extensions[_EXTENSION] = cached
    return cached


def _engines(app: Flask) -> list[tuple[str, sa.engine.Engine]]:
    """The app's engines by name ("default", then each bind key), in a stable order."""
    engines = app.extensions["migrate"].db.engines
    return sorted(((str(key or "default"), engine) for key, engine in engines.items()),
                  key=lambda item: (item[0] != "default", item[0]))


def _database_state(
    engine: sa.engine.Engine, history: History, table: sa.TableClause
) -> dict[str, Any]:
    """One database's revisions; with a `reason` when it is not ready. A newer release's
    revision (ahead) is ready: this one keeps serving until it is replaced."""
    try:
        with engine.connect() as connection:
            # No version table yet: nothing applied.
            current = frozenset(
                connection.scalars(sa.select(table.c.version_num))
                if connection.dialect.has_table(connection, table.name, schema=table.schema)
                else ())
    except sa.exc.SQLAlchemyError as exc:
        return {"reason": "database unreachable", "error": type(exc).__name__}
    state: dict[str, Any] = {"current": sorted(current)}
    verdict = history.verdict(current)
    if verdict is Verdict.AHEAD:
        return {**state, "ahead": True}
    if verdict is Verdict.BEHIND:
        return {**state, "reason": "database not at head"}
    return state


def _version_table(app: Flask) -> sa.TableClause:
    """The version table the app gave Migrate (Flask-Migrate's env.py passes it to Alembic)."""
    table = VersionTable.configured(app.extensions["migrate"].configure_args)
    return sa.table(table.name, sa.column("version_num"), schema=table.schema)

"""Example Flask project migrated by migrate-runner.

A user's own app, laid out the way the Flask-Migrate tutorials do it: an app
factory, ``db`` and ``migrate`` extension objects, models, and a
``migrations/`` directory made with ``flask db init`` / ``flask db migrate``.

Environment:

``DATABASE_URL``
    The database. Default: SQLite file ``example.db`` in the instance folder.
``EXAMPLE_SECOND_DATABASE_URL``
    When set, a second database (bind ``audit``) holds ``AuditEvent``, and the
    migrations live in ``migrations_multidb/`` (``flask db init --multidb``).

Run from this directory with ``FLASK_APP='app:create_app()'``:
``flask db upgrade``, ``flask run``, ``gunicorn 'app:create_app()'``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from flask import Flask, render_template_string
from flask.typing import ResponseReturnValue
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column

from runner.health import health_blueprint

# Named constraints make migrations identical on every backend and let
# SQLite's batch mode drop or alter a constraint by name.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

AUDIT_BIND = "audit"

db = SQLAlchemy(metadata=sa.MetaData(naming_convention=NAMING_CONVENTION))
migrate = Migrate()


class User(db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(80), unique=True)
    email: Mapped[str] = mapped_column(sa.String(120), unique=True)


class MoreUserInfo(db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    home_address: Mapped[str | None] = mapped_column(sa.String(200))
    user_bio: Mapped[str | None] = mapped_column(sa.Text)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("user.id"))


class Post(db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(120))
    content: Mapped[str | None] = mapped_column(sa.Text)
    slug: Mapped[str] = mapped_column(sa.String(120), unique=True)


# Defined only once the "audit" bind is configured (see create_app): a model
# with an unconfigured bind key makes db.create_all() raise, and the
# single-database migrations must never know about its table.
AuditEvent: Any = None


def _register_audit_model() -> Any:
    """Define ``AuditEvent`` on the ``audit`` bind, once per process."""
    global AuditEvent
    if AuditEvent is None:

        class AuditEvent(db.Model):  # type: ignore[name-defined,misc]
            __bind_key__ = AUDIT_BIND

            id: Mapped[int] = mapped_column(primary_key=True)
            kind: Mapped[str] = mapped_column(sa.String(50))
            created_at: Mapped[datetime] = mapped_column(
                sa.DateTime, default=lambda: datetime.now(UTC).replace(tzinfo=None)
            )

    return AuditEvent


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app from the environment (``test_config`` overrides it).

    One database: migrations in ``migrations/``. With
    ``EXAMPLE_SECOND_DATABASE_URL`` set: bind ``audit`` and migrations in
    ``migrations_multidb/``. Never touches the database.
    """
    app = Flask(__name__)

    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        # Only the default needs the instance folder; creating it always would
        # litter the project directory when a real database is used.
        os.makedirs(app.instance_path, exist_ok=True)
        database_url = "sqlite:///" + os.path.join(app.instance_path, "example.db")
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    # A pooled connection may have died with a database restart; readyz and
    # requests should not fail once for it.
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_pre_ping": True}

    second_url = os.environ.get("EXAMPLE_SECOND_DATABASE_URL")
    if second_url:
        app.config["SQLALCHEMY_BINDS"] = {AUDIT_BIND: second_url}
    if test_config:
        app.config.update(test_config)

    # Two databases need the multidb migrations: their scripts carry one
    # upgrade function per database.
    multidb = AUDIT_BIND in (app.config.get("SQLALCHEMY_BINDS") or {})
    if multidb:
        _register_audit_model()
    migrations_dir = "migrations_multidb" if multidb else "migrations"

    db.init_app(app)
    # Absolute, so `flask db` and the runner find it from any working directory
    # (Flask-Migrate resolves a relative directory against the cwd).
    migrate.init_app(
        app, db, directory=os.path.join(app.root_path, migrations_dir), render_as_batch=True
    )

    _register_routes(app)
    return app


INDEX_TEMPLATE = """<!doctype html>
<title>Posts</title>
<h1>Posts</h1>
<ul>
{%- for post in posts %}
  <li id="{{ post.slug }}">{{ post.title }}: {{ post.content or "" }}</li>
{%- else %}
  <li>No posts yet.</li>
{%- endfor %}
</ul>
"""


def _register_routes(app: Flask) -> None:
    @app.get("/")
    def index() -> ResponseReturnValue:
        posts = db.session.scalars(sa.select(Post).order_by(Post.id)).all()
        # render_template_string autoescapes: titles are user data.
        return render_template_string(INDEX_TEMPLATE, posts=posts)

    # GET /healthz and GET /readyz (every database at the migrations' head, or past it).
    app.register_blueprint(health_blueprint())

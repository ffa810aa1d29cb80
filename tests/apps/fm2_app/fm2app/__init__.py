"""An app that kept the `migrations/env.py` Flask-Migrate 2.0 wrote for it.

That `env.py` builds its own engine with `engine_from_config` from the app's
SQLALCHEMY_DATABASE_URI: not the Flask-SQLAlchemy engine, so nothing installed on
`db.engine` (events, engine options) reaches the connection the migrations run on.
"""

import os

from flask import Flask, jsonify
from flask_migrate import Migrate

from fm2app import models
from fm2app.models import db

migrate = Migrate()

basedir = os.path.abspath(os.path.dirname(__file__))


def create_app():
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get(
        "DATABASE_URL"
    ) or "sqlite:///" + os.path.join(basedir, "app.db")
    app.config["SQLALCHEMY_TRACK_MODIFICATIONS"] = False

    db.init_app(app)
    migrate.init_app(app, db)

    @app.route("/")
    def index():
        return jsonify(users=models.User.query.count(), notes=models.Note.query.count())

    return app

"""A factory that migrates the database itself while the app is created, as ihatemoney's
`create_app` does: `flask_migrate.upgrade()` in an app context, on every start.

As in ihatemoney, the migrations live inside the package and `Migrate(app, db)` keeps its
default directory ("migrations", relative to the working directory): the factory passes
the package's directory to `upgrade()` itself, so `flask db ...` and the runner find the
scripts only when told where they are (`-d selfmig/migrations`, RUNNER_MIGRATIONS_DIR).
"""

import os

from flask import Flask, jsonify
from flask_migrate import Migrate, upgrade

from selfmig import models
from selfmig.models import db

basedir = os.path.abspath(os.path.dirname(__file__))


def create_app():
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get(
        "DATABASE_URL"
    ) or "sqlite:///" + os.path.join(basedir, "app.db")
    app.config["SQLALCHEMY_TRACK_MODIFICATIONS"] = False

    db.init_app(app)
    Migrate(app, db)

    with app.app_context():
        # Auto-execute migrations on start-up.
        upgrade(os.path.join(app.root_path, "migrations"))

    @app.route("/")
    def index():
        return jsonify(projects=models.Project.query.count(), bills=models.Bill.query.count())

    return app

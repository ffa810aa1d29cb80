"""A Flask-Migrate app as the tutorials write it: a package, a factory, DATABASE_URL."""

import os

from flask import Flask, jsonify
from flask_migrate import Migrate

from myapp.models import Post, User, db

migrate = Migrate()

basedir = os.path.abspath(os.path.dirname(__file__))


def create_app(config_name="default"):
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get(
        "DATABASE_URL"
    ) or "sqlite:///" + os.path.join(basedir, "app.db")

    db.init_app(app)
    migrate.init_app(app, db)

    if config_name == "startup-check":
        # Some apps touch the database while they are created (a settings table,
        # a cache warm-up): that needs the database up before the app is loaded.
        with app.app_context():
            db.session.execute(db.text("SELECT 1"))

    @app.route("/")
    def index():
        return jsonify(users=User.query.count(), posts=Post.query.count())

    return app

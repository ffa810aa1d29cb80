"""A second test app, laid out as tutorials do: a package with an app factory.

Written in the older ``db.Column`` style, so that it runs on the oldest supported
stack too (SQLAlchemy 1.4, Flask-SQLAlchemy 3.0, Flask-Migrate 3.1). The URL comes
from ``DATABASE_URL`` as the platform writes it: the app rewrites nothing.
"""

import os

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from runner.health import health_blueprint

db = SQLAlchemy()
migrate = Migrate()


def create_app():
    app = Flask(__name__)
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        os.makedirs(app.instance_path, exist_ok=True)
        database_url = "sqlite:///" + os.path.join(app.instance_path, "blog.db")
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    db.init_app(app)
    migrate.init_app(app, db)

    from blog.views import bp  # the views import the models

    app.register_blueprint(bp)
    app.register_blueprint(health_blueprint())
    return app

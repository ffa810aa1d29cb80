"""A factory that connects to the database while the app is created, and takes its URL
only from its own configuration, as PowerDNS-Admin does.

- The URL comes from APP_DB_URI (PowerDNS-Admin: SQLALCHEMY_DATABASE_URI), never from
  DATABASE_URL; unset, it is a SQLite file under /data that does not exist here.
- While it is created, the factory creates its `sessions` table when it is missing (Flask-
  Session's SQLAlchemy backend: `__table__.create(bind=db.engine, checkfirst=True)` in an
  app context): a database that is down fails the factory, and two replicas that start
  together on a fresh database can both see no table and race to create it.
"""

import os

from flask import Flask, jsonify
from flask_migrate import Migrate

from connapp import models
from connapp.models import db

migrate = Migrate()


def create_app():
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get(
        "APP_DB_URI", "sqlite:////data/connecting_app.db"
    )
    app.config["SQLALCHEMY_TRACK_MODIFICATIONS"] = False

    db.init_app(app)
    migrate.init_app(app, db)

    with app.app_context():
        models.sessions.create(bind=db.engine, checkfirst=True)

    @app.route("/")
    def index():
        return jsonify(settings=models.Setting.query.count(), domains=models.Domain.query.count())

    return app

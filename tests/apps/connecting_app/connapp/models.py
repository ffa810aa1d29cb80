from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()

# A side table the app creates itself while it starts, outside its migrations, as
# Flask-Session's SQLAlchemy backend does for PowerDNS-Admin: on the app's metadata (so
# `flask db migrate` leaves it alone), created with CREATE TABLE when it is missing.
sessions = db.Table(
    "sessions",
    db.Column("id", db.Integer, primary_key=True),
    db.Column("session_id", db.String(255), unique=True),
    db.Column("data", db.LargeBinary),
    db.Column("expiry", db.DateTime),
)


class Setting(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(64), unique=True, nullable=False)
    value = db.Column(db.Text)


class Domain(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(255), index=True, unique=True, nullable=False)
    serial = db.Column(db.BigInteger)

from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()


class Project(db.Model):
    id = db.Column(db.String(64), primary_key=True)
    name = db.Column(db.String(128), nullable=False)
    contact_email = db.Column(db.String(128), nullable=False)


class Bill(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    project_id = db.Column(db.String(64), db.ForeignKey("project.id"), index=True)
    what = db.Column(db.UnicodeText, nullable=False)
    amount = db.Column(db.Float, nullable=False)

from flask import Blueprint

from blog import db
from blog.models import Note

bp = Blueprint("notes", __name__)


@bp.get("/")
def index():
    return {"notes": db.session.query(Note).count()}

"""migrate-runner: wait for the database, migrate under an advisory lock, exec gunicorn."""

__version__ = "0.1.0"

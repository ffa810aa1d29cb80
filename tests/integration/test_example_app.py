"""The example app's probes, against a real SQLite file: /healthz always, /readyz at head."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from support import EXAMPLE, run_runner, runner_env


@pytest.fixture
def app(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Flask:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.delenv("EXAMPLE_SECOND_DATABASE_URL", raising=False)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from app import create_app

    created: Flask = create_app()
    return created


def test_readyz_follows_the_database(app: Flask, sqlite_url: str) -> None:
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    behind = client.get("/readyz")
    assert behind.status_code == 503
    assert behind.get_json()["reason"] == "database not at head"

    assert run_runner(["migrate"], runner_env(sqlite_url)).returncode == 0
    assert client.get("/readyz").status_code == 200
    assert client.get("/").status_code == 200

    # A newer release migrated past these scripts: still ready, as in a rolling update.
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = 'f00dnewer'"))
    engine.dispose()
    assert client.get("/readyz").status_code == 200


def test_readyz_fails_while_the_database_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://u@127.0.0.1:9/none")
    monkeypatch.syspath_prepend(str(EXAMPLE))
    from app import create_app

    response = create_app().test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["reason"] == "database unreachable"
    assert create_app().test_client().get("/healthz").status_code == 200

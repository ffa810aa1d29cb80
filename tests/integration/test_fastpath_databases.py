"""The fast path against real databases: "at head" exactly when `runner check` says so."""

from __future__ import annotations

import urllib.parse
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from runner.errors import ExitCode
from runner.fastpath import decide, parse_url, read_version_rows
from support import EXAMPLE, add_revision, execute, run_runner, runner_env, script_heads

MIGRATIONS = EXAMPLE / "migrations"


def migrate(url: str, cwd: Path = EXAMPLE) -> None:
    result = run_runner(["migrate"], runner_env(url), cwd=cwd)
    assert result.returncode == 0, result.stderr


def check(url: str, cwd: Path = EXAMPLE) -> int:
    return run_runner(["check"], runner_env(url), cwd=cwd).returncode


def test_at_head_exactly_when_check_says_so(database_url: str) -> None:
    before = decide(database_url, MIGRATIONS)
    assert not before.at_head
    assert "at base" in before.reason  # no version table yet: base, not a doubt
    assert check(database_url) == ExitCode.NOT_AT_HEAD

    migrate(database_url)
    assert check(database_url) == ExitCode.OK
    assert decide(database_url, MIGRATIONS).at_head
    target = parse_url(database_url)
    assert target is not None
    assert read_version_rows(target) == tuple(script_heads())


def test_a_database_behind_the_scripts_is_not_at_head(database_url: str, project: Path) -> None:
    migrate(database_url, project)
    add_revision(project, "later", "pass")
    assert check(database_url, project) == ExitCode.NOT_AT_HEAD
    verdict = decide(database_url, project / "migrations")
    assert not verdict.at_head
    assert script_heads()[0] in verdict.reason


def test_a_database_ahead_of_the_scripts_is_a_doubt(database_url: str) -> None:
    migrate(database_url)
    execute(database_url, "UPDATE alembic_version SET version_num = 'f00dfeedbeef'")
    # The full path decides: exit 6, or serve with RUNNER_ALLOW_NEWER_DATABASE.
    assert check(database_url) == ExitCode.REVISIONS_UNUSABLE
    assert not decide(database_url, MIGRATIONS).at_head


def test_several_heads_are_a_doubt(database_url: str, project: Path) -> None:
    migrate(database_url, project)
    head = script_heads()[0]
    branch = project / "migrations" / "versions" / "b0b0b0b0b0b0_branch.py"
    branch.write_text(
        (project / "migrations" / "versions" / f"{head}_posts_with_slug.py").read_text()
        .replace(f"revision = '{head}'", "revision = 'b0b0b0b0b0b0'")
        .replace("op.create_table('post',", "op.create_table('other_post',")
    )
    assert check(database_url, project) == ExitCode.REVISIONS_UNUSABLE
    verdict = decide(database_url, project / "migrations")
    assert not verdict.at_head
    assert "2 heads" in verdict.reason


def test_an_unparsable_revision_file_is_a_doubt(database_url: str, project: Path) -> None:
    migrate(database_url, project)
    versions = project / "migrations" / "versions"
    first = sorted(versions.glob("*.py"))[0]
    first.write_text(first.read_text().replace("branch_labels = None",
                                               "branch_labels = None\nprint('imported')"))
    assert check(database_url, project) == ExitCode.OK  # Alembic imports it fine...
    verdict = decide(database_url, project / "migrations")
    assert not verdict.at_head  # ...but the fast path cannot be sure without importing it
    assert "revision file" in verdict.reason


def test_an_unreachable_database_is_a_doubt() -> None:
    for url in ("postgresql+psycopg://app:pw@127.0.0.1:9/app",
                "mysql+pymysql://app:pw@127.0.0.1:9/app"):
        verdict = decide(url, MIGRATIONS, connect_timeout=2)
        assert not verdict.at_head
        assert "could not be read" in verdict.reason


@pytest.mark.mysql
def test_a_percent_encoded_password_reaches_the_server(mysql_url: str) -> None:
    migrate(mysql_url)
    url = sa.engine.make_url(mysql_url)
    user, password = f"mr_{uuid.uuid4().hex[:8]}", "p@ss:w/rd%?#"
    execute(mysql_url, f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'",
            f"GRANT SELECT ON `{url.database}`.* TO '{user}'@'%'")
    try:
        encoded = (f"mariadb://{user}:{urllib.parse.quote(password, safe='')}@{url.host}:{url.port}"
                   f"/{url.database}")
        assert decide(encoded, MIGRATIONS).at_head
        wrong = encoded.replace(urllib.parse.quote(password, safe=''), "wrong")
        assert not decide(wrong, MIGRATIONS).at_head
    finally:
        execute(mysql_url, f"DROP USER '{user}'@'%'")


def test_a_sqlite_file_that_does_not_exist_is_at_base(tmp_path: Path) -> None:
    path = tmp_path / "none.db"
    verdict = decide(f"sqlite:///{path}", MIGRATIONS)
    assert not verdict.at_head
    assert "at base" in verdict.reason
    assert not path.exists()  # read-only: the fast path never creates the file


def test_a_version_table_the_app_configures_is_read_when_given(postgresql_url: str) -> None:
    migrate(postgresql_url)
    execute(postgresql_url, "ALTER TABLE alembic_version RENAME TO deploy_version")
    assert not decide(postgresql_url, MIGRATIONS).at_head
    assert decide(postgresql_url, MIGRATIONS, version_table="deploy_version").at_head

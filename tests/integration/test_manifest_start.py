"""The fast start: with `runner prepare`'s manifest and the URL known, a replica at head
decides with one query and never loads the app; anything the manifest cannot vouch for
loads the app, which decides as `flask db` would."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from runner.drivers import VersionTable, open_driver
from runner.errors import ExitCode
from runner.urls import normalize_url, parse_url
from support import (
    COUNTED_APP,
    add_revision,
    counted_env,
    event_names,
    events,
    execute,
    imports,
    one_error,
    prepare,
    run_runner,
    runner_env,
    script_heads,
)

HEAD = script_heads()[0]


def noop(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The migrate.noop event of a successful `migrate`."""
    assert result.returncode == ExitCode.OK, result.stderr
    (record,) = [r for r in events(result.stderr) if r["event"] == "migrate.noop"]
    return record


def test_at_head_migrate_and_check_never_load_the_app(database_url: str, project: Path) -> None:
    env = counted_env(project, database_url)
    first = run_runner(["migrate"], env, cwd=project)
    assert first.returncode == ExitCode.OK, first.stderr
    assert event_names(first.stderr)[-1] == "migrate.applied"
    loaded = imports(project)  # prepare, then the replica that migrated

    result = run_runner(["migrate"], env, cwd=project)
    assert event_names(result.stderr) == ["db.ready", "migrate.noop"]
    assert noop(result)["path"] == "fast"
    assert noop(result)["heads"] == [HEAD]
    check = run_runner(["check"], env, cwd=project)
    assert check.returncode == ExitCode.OK, check.stderr
    assert check.stdout == f"at head: {HEAD}\n"
    assert imports(project) == loaded
    for command in ("migrate", "check"):
        traced = subprocess.run([sys.executable, "-X", "importtime", "-m", "runner", command],
                                env=env, cwd=project, capture_output=True, text=True,
                                timeout=120, check=False)
        assert traced.returncode == ExitCode.OK, traced.stderr
        imported = {match.group(1).split(".")[0] for match in re.finditer(
            r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", traced.stderr, re.M)}
        assert "runner" in imported  # the listing is there...
        assert not imported & {"flask", "sqlalchemy", "alembic", "flask_migrate"}, command


def test_behind_the_app_decides_then_the_manifest_is_refreshed(
    database_url: str, project: Path
) -> None:
    env = counted_env(project, database_url)
    assert run_runner(["migrate"], env, cwd=project).returncode == ExitCode.OK
    revision = add_revision(project, "later", "pass")  # a new file: the manifest is stale
    check = run_runner(["check"], env, cwd=project)
    assert one_error(check, ExitCode.NOT_AT_HEAD)["pending"] == [revision]
    result = run_runner(["migrate"], env, cwd=project)
    applied = [r for r in events(result.stderr) if r["event"] == "migrate.applied"]
    assert applied and applied[0]["revisions"] == [revision], result.stderr
    # The full start rewrote the manifest it found: the next start is fast again.
    assert noop(run_runner(["migrate"], env, cwd=project))["path"] == "fast"


def test_behind_a_prepared_replica_takes_the_lock_then_loads_the_app(
    database_url: str, project: Path
) -> None:
    revision = add_revision(project, "later", "pass")
    env = counted_env(project, database_url)
    result = run_runner(["migrate"], env, cwd=project)
    names = event_names(result.stderr)
    assert names[:2] == ["db.ready", "lock.acquired"], names
    assert names[-1] == "migrate.applied"
    (applied,) = [r for r in events(result.stderr) if r["event"] == "migrate.applied"]
    assert applied["revisions"][-1] == revision


def test_a_revision_the_manifest_does_not_know_is_left_to_the_app(
    database_url: str, project: Path
) -> None:
    """A newer release's revision, or one of a configuration only the app can see (the
    example's second database, chosen by an environment variable): the app decides."""
    env = counted_env(project, database_url)
    assert run_runner(["migrate"], env, cwd=project).returncode == ExitCode.OK
    execute(database_url, "UPDATE alembic_version SET version_num = 'f00dfeedbeef'")
    loaded = imports(project)
    for command in ("migrate", "check"):
        error = one_error(run_runner([command], env, cwd=project),
                          ExitCode.REVISIONS_UNUSABLE)
        assert error["revisions"] == ["f00dfeedbeef"]
    assert imports(project) == loaded + 2
    allowed = run_runner(["migrate"], {**env, "RUNNER_ALLOW_NEWER_DATABASE": "true"},
                         cwd=project)
    assert noop(allowed)["path"] == "full"
    assert "revisions.newer" in event_names(allowed.stderr)


def test_prepare_refuses_several_heads(sqlite_url: str, project: Path) -> None:
    versions = project / "migrations" / "versions"
    (source,) = versions.glob(f"{HEAD}_*.py")
    (versions / "b0b0b0b0b0b0_branch.py").write_text(
        source.read_text().replace(f"revision = '{HEAD}'", "revision = 'b0b0b0b0b0b0'"))
    error = one_error(run_runner(["prepare"], runner_env(sqlite_url), cwd=project),
                      ExitCode.REVISIONS_UNUSABLE)
    assert "2 heads" in error["message"]


# Nothing the manifest cannot vouch for: each of these must load the app.

def flask_db(project: Path, env: dict[str, str], command: str) -> set[str]:
    """The revisions `flask db current` or `flask db heads` prints."""
    result = subprocess.run([sys.executable, "-m", "flask", "db", command], env=env,
                            cwd=project, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    return set(re.findall(r"^([0-9a-f]{12})\b", result.stdout, re.M))


def assert_agrees_with_flask_db(project: Path, env: dict[str, str]) -> None:
    """`runner check` says "at head" exactly when `flask db current` and `heads` agree."""
    at_head = flask_db(project, env, "current") == flask_db(project, env, "heads")
    check = run_runner(["check"], env, cwd=project)
    assert check.returncode == (ExitCode.OK if at_head else ExitCode.NOT_AT_HEAD), check.stderr


EXTRA_VERSIONS = '''
@migrate.configure
def more_versions(config):
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
    config.set_main_option("version_locations", os.path.join(here, "versions") + " "
                           + os.path.join(here, "more_versions"))
    return config
'''


def later_revision_in(folder: Path, down: str) -> str:
    folder.mkdir(exist_ok=True)
    revision = uuid.uuid4().hex[:12]
    (folder / f"{revision}_later.py").write_text(
        f'revision = "{revision}"\ndown_revision = "{down}"\nbranch_labels = None\n'
        "depends_on = None\n\n\ndef upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n")
    return revision


@pytest.mark.parametrize("prepared", ["before", "after"])
def test_a_configure_callback_that_adds_a_version_location(
    sqlite_url: str, project: Path, prepared: str
) -> None:
    env = runner_env(sqlite_url)
    if prepared == "before":
        prepare(project, env)
    assert run_runner(["migrate"], env, cwd=project).returncode == ExitCode.OK
    app = project / "app.py"
    app.write_text(app.read_text() + EXTRA_VERSIONS)
    later_revision_in(project / "migrations" / "more_versions", HEAD)
    if prepared == "after":
        prepare(project, env)
    assert_agrees_with_flask_db(project, env)
    result = run_runner(["migrate"], env, cwd=project)
    assert "migrate.applied" in event_names(result.stderr), result.stderr
    assert_agrees_with_flask_db(project, env)


def test_a_version_table_set_in_code_after_init_app(sqlite_url: str, project: Path) -> None:
    app = project / "app.py"
    app.write_text(app.read_text().replace(
        "    _register_routes(app)",
        "    app.extensions['migrate'].configure_args['version_table'] = 'deploy_version'\n"
        "    _register_routes(app)"))
    env = runner_env(sqlite_url)
    prepare(project, env)
    assert run_runner(["migrate"], env, cwd=project).returncode == ExitCode.OK
    revision = add_revision(project, "later", "pass")
    prepare(project, env)
    # Not the app's version table, yet at the scripts' head: it must not be read.
    execute(sqlite_url, "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)",
            f"INSERT INTO alembic_version VALUES ('{revision}')")
    assert_agrees_with_flask_db(project, env)
    result = run_runner(["migrate"], env, cwd=project)
    applied = [r for r in events(result.stderr) if r["event"] == "migrate.applied"]
    assert applied and applied[0]["revisions"] == [revision], result.stderr
    assert noop(run_runner(["migrate"], env, cwd=project))["path"] == "fast"


@pytest.mark.parametrize("change", [
    "a revision file", "env.py", "the app module", "no manifest", "another app",
    "another migrations directory", "an unreadable manifest", "another working directory",
])
def test_what_the_manifest_cannot_vouch_for_loads_the_app(
    sqlite_url: str, project: Path, tmp_path: Path, change: str
) -> None:
    env = counted_env(project, sqlite_url)
    assert run_runner(["migrate"], env, cwd=project).returncode == ExitCode.OK
    cwd = project
    manifest = project / ".migrate-runner.json"
    if change == "a revision file":
        (first,) = (project / "migrations" / "versions").glob(f"{HEAD}_*.py")
        first.write_text(first.read_text() + "\n# edited\n")
    elif change == "env.py":
        env_py = project / "migrations" / "env.py"
        env_py.write_text(env_py.read_text() + "\n# edited\n")
    elif change == "the app module":
        app = project / "app.py"
        app.write_text(app.read_text() + "\n# edited\n")
    elif change == "no manifest":
        manifest.unlink()
    elif change == "another app":
        (project / "other.py").write_text("from counted import create_app\n")
        env = {**env, "FLASK_APP": "other:create_app()"}
    elif change == "another migrations directory":
        env = {**env, "RUNNER_MIGRATIONS_DIR": "migrations"}
    elif change == "an unreadable manifest":
        manifest.write_text(manifest.read_text()[:40])
    elif change == "another working directory":
        cwd = tmp_path / "elsewhere"
        cwd.mkdir()
        (cwd / ".migrate-runner.json").write_text(manifest.read_text())
        env = {**env, "PYTHONPATH": str(project)}
    loaded = imports(project)
    result = run_runner(["migrate"], env, cwd=cwd)
    assert noop(result)["path"] == "full"
    assert imports(project) == loaded + 1


def test_the_manifest_is_refreshed_only_where_it_was_made_for_this_app(
    sqlite_url: str, project: Path
) -> None:
    env = counted_env(project, sqlite_url)
    manifest = project / ".migrate-runner.json"
    made = json.loads(manifest.read_text())
    (project / "other.py").write_text("from app import create_app\n")
    result = run_runner(["migrate"], {**env, "FLASK_APP": "other:create_app()"}, cwd=project)
    assert result.returncode == ExitCode.OK, result.stderr
    assert json.loads(manifest.read_text()) == made


# The differential test: over generated histories and database states, the fast verdict is
# Alembic's (what `flask db current` and `flask db heads` print).

def generated_history(project: Path, seed: int) -> list[str]:
    """Replace the project's revisions with a generated history: branches that merge back
    into one head. The revisions, in the order written."""
    import random

    chooser = random.Random(seed)
    versions = project / "migrations" / "versions"
    for path in versions.glob("*.py"):
        path.unlink()
    revisions: list[str] = []
    tips: list[str] = []
    for index in range(chooser.randint(3, 9)):
        revision = f"{seed:04x}{index:08x}"
        if tips and len(tips) > 1 and chooser.random() < 0.4:
            parents = tuple(chooser.sample(tips, 2))  # a merge
            tips = [tip for tip in tips if tip not in parents]
        elif tips and chooser.random() < 0.3:
            parents = (chooser.choice(revisions),)  # a new branch
        else:
            parents = (tips.pop(),) if tips else ()
        down = repr(parents[0]) if len(parents) == 1 else (repr(parents) if parents else "None")
        (versions / f"{revision}_step.py").write_text(
            f"revision = {revision!r}\ndown_revision = {down}\nbranch_labels = None\n"
            "depends_on = None\n\n\ndef upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n")
        revisions.append(revision)
        tips.append(revision)
    while len(tips) > 1:  # one head, as the runner requires
        revision = f"{seed:04x}{len(revisions):08x}"
        (versions / f"{revision}_merge.py").write_text(
            f"revision = {revision!r}\ndown_revision = {tuple(tips[:2])!r}\n"
            "branch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n    pass\n\n\n"
            "def downgrade():\n    pass\n")
        tips = [*tips[2:], revision]
        revisions.append(revision)
    return revisions


def alembic_verdict(project: Path, url: str) -> str:
    """What Alembic says: the database's current heads against the scripts' heads."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(project / "migrations"))
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()
    known = {revision.revision for revision in script.walk_revisions()}
    if current == set(script.get_heads()):
        return "at head"
    return "ahead" if current - known else "behind"


@pytest.mark.parametrize("seed", range(6))
def test_the_fast_verdict_is_alembics_over_generated_histories(
    sqlite_url: str, project: Path, seed: int
) -> None:
    import random

    revisions = generated_history(project, seed)
    env = runner_env(sqlite_url)
    prepare(project, env)
    chooser = random.Random(seed)
    states = [[], [revisions[-1]], ["f00dfeedbeef"],
              *([chooser.choice(revisions)] for _ in range(3))]
    for state in states:
        execute(sqlite_url, "CREATE TABLE IF NOT EXISTS alembic_version"
                " (version_num VARCHAR(32) NOT NULL)", "DELETE FROM alembic_version",
                *(f"INSERT INTO alembic_version VALUES ('{rev}')" for rev in state))
        expected = alembic_verdict(project, sqlite_url)
        check = run_runner(["check", "--allow-newer-database"], env, cwd=project)
        if expected == "behind":
            assert check.returncode == ExitCode.NOT_AT_HEAD, (state, check.stderr)
        else:
            assert check.returncode == ExitCode.OK, (state, check.stderr)
            assert ("revisions.newer" in event_names(check.stderr)) == (expected == "ahead")
            # Decided without the app: at head or ahead needs no pending list.
            assert "db.ready" in event_names(check.stderr)


# The connection: waited for cheaply, refusals named.

def test_a_database_not_up_is_waited_for_without_sqlalchemy_then_given_up(
    project: Path
) -> None:
    url = "postgresql+psycopg://app:pw@127.0.0.1:9/app"
    # The budget runs from the start: 4 s leaves a loaded machine's slow start room for
    # more than one try (db.waiting comes before a retry).
    env = counted_env(project, url, RUNNER_WAIT_TIMEOUT="4")
    started = time.monotonic()
    for command in ("migrate", "check"):
        result = run_runner([command], env, cwd=project)
        error = one_error(result, ExitCode.DATABASE_UNAVAILABLE)
        assert "within 4s" in error["message"] and "DATABASE_URL" in error["message"]
        assert "pw" not in result.stderr
        assert "db.waiting" in event_names(result.stderr)
    assert time.monotonic() - started < 60  # did not wait twice the deadline, nor hang
    traced = subprocess.run([sys.executable, "-X", "importtime", "-m", "runner", "migrate"],
                            env=env, cwd=project, capture_output=True, text=True, timeout=60,
                            check=False)
    assert traced.returncode == ExitCode.DATABASE_UNAVAILABLE
    assert "| sqlalchemy" not in traced.stderr


@pytest.mark.postgresql
def test_refused_credentials_name_where_the_url_came_from(
    postgresql_url: str, project: Path, tmp_path: Path
) -> None:
    url = sa.make_url(postgresql_url).set(username="nobody_here", password="s3cret")
    secret = tmp_path / "url"
    secret.write_text(url.render_as_string(hide_password=False))
    env = counted_env(project, None, DATABASE_URL_FILE=str(secret))
    result = run_runner(["migrate"], env, cwd=project)
    error = one_error(result, ExitCode.DATABASE_UNAVAILABLE)
    assert "refused the connection" in error["message"]
    assert "in DATABASE_URL_FILE" in error["message"]
    assert "s3cret" not in result.stderr


@pytest.mark.mysql
def test_a_percent_encoded_password_reaches_the_server(mysql_url: str) -> None:
    url = sa.engine.make_url(mysql_url)
    user, password = f"mr_{uuid.uuid4().hex[:8]}", "p@ss:w/rd%?#"
    execute(mysql_url, f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'",
            f"GRANT SELECT ON `{url.database}`.* TO '{user}'@'%'")
    try:
        quoted = urllib.parse.quote(password, safe="")
        encoded = f"mariadb://{user}:{quoted}@{url.host}:{url.port}/{url.database}"
        driver = open_driver(normalize_url(parse_url(encoded)), VersionTable(), 5)
        with driver:
            assert driver.read_versions(VersionTable()) == ()
    finally:
        execute(mysql_url, f"DROP USER '{user}'@'%'")


# Where the URL and the app come from.

def test_a_flaskenv_is_read_as_flask_reads_it(sqlite_url: str, project: Path) -> None:
    (project / "counted.py").write_text(COUNTED_APP)
    (project / ".flaskenv").write_text(f"FLASK_APP=counted:create_app()\n"
                                       f"DATABASE_URL={sqlite_url}\n")
    env = runner_env(None)
    del env["FLASK_APP"]
    prepare(project, env)
    assert run_runner(["migrate"], env, cwd=project).returncode == ExitCode.OK
    assert noop(run_runner(["migrate"], env, cwd=project))["path"] == "fast"


def test_a_relative_sqlite_url_is_the_instance_folders(project: Path) -> None:
    env = counted_env(project, "sqlite:///relative.db")
    assert run_runner(["migrate"], env, cwd=project).returncode == ExitCode.OK
    assert (project / "instance" / "relative.db").is_file()
    assert noop(run_runner(["migrate"], env, cwd=project))["path"] == "fast"


@pytest.mark.postgresql
def test_two_databases_load_the_app(postgresql_url: str, sqlite_url: str, project: Path) -> None:
    env = runner_env(postgresql_url, EXAMPLE_SECOND_DATABASE_URL=sqlite_url)
    prepare(project, env)
    assert json.loads((project / ".migrate-runner.json").read_text())["binds"] == ["audit"]
    assert run_runner(["migrate"], env, cwd=project).returncode == ExitCode.OK
    assert noop(run_runner(["migrate"], env, cwd=project))["path"] == "full"


def test_a_url_known_only_to_the_app_loads_it(project: Path) -> None:
    # No DATABASE_URL: the example app uses a SQLite file in its instance folder.
    env = counted_env(project, None)
    assert run_runner(["migrate"], env, cwd=project).returncode == ExitCode.OK
    assert noop(run_runner(["migrate"], env, cwd=project))["path"] == "full"
    assert (project / "instance" / "example.db").is_file()

"""Every MySQL driver SQLAlchemy offers, as apps name them in their URLs.

Mailu builds `mysql+mysqlconnector://`, PowerDNS-Admin's `mysql://` means mysqlclient,
others use PyMySQL or MariaDB's own connector. The runner's lock and reads go through
PyMySQL whatever the URL names; the upgrade runs on the app's engine with the app's driver:
the herd, the lock and the table-lock timeout must work with each. A driver that is not
installed here is skipped (CI installs PyMySQL and mysql-connector-python); with mysqlclient
missing, a `mysql+mysqldb://` URL is a configuration error that names the package.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from runner.errors import ExitCode
from runner.urls import installed as importable
from support import (
    at_head_then_add,
    event_names,
    events,
    gated_revision,
    gave_up_on_a_table_lock,
    hold_table,
    one_error,
    run_runner,
    runner_env,
    start_herd,
    version_rows,
)

pytestmark = pytest.mark.mysql

DRIVERS = {
    # the URL's driver name: (its module, the package that provides it)
    "pymysql": ("pymysql", "PyMySQL"),
    "mysqlconnector": ("mysql.connector", "mysql-connector-python"),
    "mariadbconnector": ("mariadb", "mariadb"),
    "mysqldb": ("MySQLdb", "mysqlclient"),
}

ADD_COLUMN = 'op.add_column("user", sa.Column("nickname", sa.String(40), nullable=True))'


def installed(driver: str) -> bool:
    """As the runner tells (not a folder of that name: tests/e2e/mariadb is on sys.path
    in a pytest worker that collected the container tests)."""
    return importable(DRIVERS[driver][0])


def require(driver: str) -> None:
    if not installed(driver):
        module, package = DRIVERS[driver]
        pytest.skip(f"the {driver} driver ({module}) is not installed in this environment:"
                    f" pip install {package} to test it (not in the dev group: CI skips it)")


def with_driver(url: str, driver: str) -> str:
    """`url` (a MariaDB URL of the tests) naming `driver`."""
    return sa.make_url(url).set(drivername=f"mysql+{driver}").render_as_string(
        hide_password=False)


# A URL option other than charset: the runner's own connection (lock, reads) uses the
# URL's driver too, through SQLAlchemy; without one, PyMySQL.
OWN_DRIVER_QUERY = "?connect_timeout=10"


@pytest.mark.parametrize("query", ["", OWN_DRIVER_QUERY])
@pytest.mark.parametrize("driver", list(DRIVERS))
def test_herd_with_each_driver_applies_once(
    project: Path, mysql_url: str, tmp_path: Path, driver: str, query: str
) -> None:
    require(driver)
    gated = gated_revision(project)
    results = start_herd(with_driver(mysql_url, driver) + query, cwd=project, replicas=4,
                         gate=tmp_path / "gate")
    assert [result.returncode for result in results] == [0] * 4, [r.stderr for r in results]
    applied = [result for result in results if "migrate.applied" in event_names(result.stderr)]
    assert len(applied) == 1
    (record,) = [record for record in events(applied[0].stderr)
                 if record["event"] == "migrate.applied"]
    assert record["revisions"][-1] == gated
    assert all("Traceback" not in result.stderr for result in results)
    assert version_rows(mysql_url) == [gated]


@pytest.mark.parametrize("driver", list(DRIVERS))
def test_table_lock_timeout_with_each_driver(
    project: Path, mysql_url: str, driver: str
) -> None:
    require(driver)
    url = with_driver(mysql_url, driver)
    old, new = at_head_then_add(project, url, ADD_COLUMN)
    with hold_table(mysql_url):
        result = run_runner(["migrate", "--ddl-lock-timeout", "1", "--lock-timeout", "8"],
                            runner_env(url), cwd=project, timeout=40)
    # Each try ended by the 1 s table-lock timeout (the server's own is 50 s).
    gave_up_on_a_table_lock(result, mysql_url, new)
    assert version_rows(mysql_url) == [old]


@pytest.mark.parametrize("driver", ["mysqldb", "mariadbconnector", "mysqlconnector"])
@pytest.mark.parametrize("query", ["", OWN_DRIVER_QUERY])
def test_missing_driver_is_a_configuration_error_naming_its_package(
    project: Path, mysql_url: str, driver: str, query: str
) -> None:
    if installed(driver):
        pytest.skip(f"the {driver} driver is installed here: the other tests use it")
    result = run_runner(["migrate"], runner_env(with_driver(mysql_url, driver) + query),
                        cwd=project, timeout=60)
    message = str(one_error(result, ExitCode.CONFIG)["message"])
    assert f"pip install {DRIVERS[driver][1]}" in message
    assert "mysql+pymysql://" in message  # a driver that works
    engine = sa.create_engine(mysql_url, poolclass=sa.pool.NullPool)
    try:
        assert "user" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()

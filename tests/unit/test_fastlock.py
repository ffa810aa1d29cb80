"""The fast path names the migration lock exactly as the lock backends do, without SQLAlchemy."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy.engine import make_url

from runner import locks
from runner.fastlock import migration_lock_name
from runner.fastpath import parse_url

URLS = [
    "postgresql+psycopg://app:s3cret@db.example.com:5432/app",
    "postgres://app:pw@db:6543/app%2Fprod",
    "postgresql://app@127.0.0.1/my%20app?sslmode=require",
    "postgresql://app@127.0.0.1",
    "postgresql://app@127.0.0.1/",
    "mysql+pymysql://root:@127.0.0.1:3306/app",
    "mariadb://app:pw@db:3307/%C3%A9t%C3%A9",
    "mysql://root@127.0.0.1:3306/",
]


@pytest.mark.parametrize("url", URLS)
def test_the_lock_name_and_keys_are_the_full_paths(url: str) -> None:
    target = parse_url(url)
    assert target is not None
    # As runner.migration.open_migration_lock names it from the app's engine URL.
    expected = locks.lock_name(make_url(url).database, "alembic_version", None)
    assert migration_lock_name(target) == expected
    assert locks.advisory_key(expected) == int.from_bytes(
        bytes.fromhex(locks.hashed(expected, 16)), "big", signed=True)
    halves = locks.advisory_key_halves(locks.advisory_key(expected))
    assert (halves["high"] << 32 | halves["low"]) == locks.advisory_key(expected) & (2**64 - 1)
    assert len(locks.user_lock_name(expected)) <= 64


def test_two_databases_have_two_locks() -> None:
    names = {migration_lock_name(parse_url(f"postgresql://u@h/{db}"))  # type: ignore[arg-type]
             for db in ("app", "app2")}
    assert len({locks.advisory_key(name) for name in names}) == 2


def test_the_lock_modules_import_no_sqlalchemy() -> None:
    code = ("import sys, runner.cli, runner.fastlock, runner.locks;"
            " print(sorted(m for m in ('sqlalchemy', 'flask', 'alembic') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=60)
    assert result.stdout.strip() == "[]"

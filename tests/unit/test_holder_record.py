"""The holder's identity as the lock connection carries it, and as waiters print it."""

from __future__ import annotations

import datetime
import json

from runner.drivers import Holder
from runner.drivers.mysql import beacon_prefix, holder_from_rows
from runner.drivers.postgresql import application_name, holder_from_row, parse_application_name


def test_application_name_round_trips() -> None:
    name = application_name(Holder(host="web-5d9c-x2x9k", pid=4194303))
    assert name == "migrate-runner web-5d9c-x2x9k 4194303"
    assert parse_application_name(name) == ("web-5d9c-x2x9k", 4194303)


def test_a_long_host_is_cut_so_the_pid_survives_postgresqls_63_bytes() -> None:
    name = application_name(Holder(host="h" * 80, pid=12345))
    assert len(name.encode()) <= 63
    host, pid = parse_application_name(name)
    assert pid == 12345
    assert host and "h" * 40 in host


def test_other_application_names_name_nobody() -> None:
    for name in (None, "", "psql", "migrate-runner web", "migrate-runner web x"):
        assert parse_application_name(name) == (None, None)


def test_describe_says_why_a_pid_is_unknown() -> None:
    assert Holder("web-1", 7, "2026-01-01T00:00:00Z").describe() == (
        "pid 7 on host web-1 since 2026-01-01T00:00:00Z")
    assert Holder(None, None, why_unknown="hidden").describe() == (
        "a process whose pid is unknown (hidden)")
    assert Holder.from_dict(Holder("web-1", 7).as_dict()) == Holder("web-1", 7)
    assert "why_unknown" not in Holder("web-1", 7).as_dict()


def test_a_postgresql_holder_is_read_from_its_session() -> None:
    took = datetime.datetime(2026, 1, 1, 12, 0, 5, tzinfo=datetime.UTC)
    row = ("migrate-runner web-1 42", took, "10.0.0.7")
    assert holder_from_row(row) == Holder("web-1", 42, "2026-01-01T12:00:05Z")
    # Another client holds it: its address; another role's session: hidden, and why.
    other = holder_from_row(("psql", None, "10.0.0.8"))
    assert (other.host, other.pid) == ("10.0.0.8", None) if other else False
    assert other is not None and "not named by a runner" in other.describe()
    hidden = holder_from_row((None, None, None))
    assert hidden is not None and "pg_read_all_stats" in hidden.describe()
    assert holder_from_row(None) is None


def test_a_mysql_holder_is_read_from_its_beacon_or_else_its_client() -> None:
    lock = "migrate-runner/abc"
    beacon = (beacon_prefix(lock, 17) + json.dumps(Holder("web-1", 42, "x").as_dict())
              + " */ GET_LOCK('migrate-runner/abc/holder', 31622400)")
    rows = [(17, "10.0.0.7:50412", None), (18, "10.0.0.7:50413", beacon)]
    assert holder_from_rows(lock, 17, rows) == Holder("web-1", 42, "x")
    # Another lock's beacon, or none yet: the holder's client address only, and why.
    other = [(17, "10.0.0.7:50412", None), (18, "h:1", beacon.replace("/abc ", "/abd "))]
    unnamed = holder_from_rows(lock, 17, other)
    assert (unnamed.host, unnamed.pid) == ("10.0.0.7", None)
    assert "without a runner's beacon" in unnamed.describe()
    assert "grant PROCESS" in holder_from_rows(lock, 17, []).describe()

"""The holder's identity as the lock connection carries it, and as waiters print it."""

from __future__ import annotations

from runner.locks import Holder
from runner.locks.postgresql import application_name, parse_application_name


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


def test_describe() -> None:
    assert Holder("web-1", 7, "2026-01-01T00:00:00Z").describe() == (
        "pid 7 on host web-1 since 2026-01-01T00:00:00Z")
    assert Holder(None, None).describe() == "a process of unknown pid"
    assert Holder.from_dict(Holder("web-1", 7).as_dict()) == Holder("web-1", 7)

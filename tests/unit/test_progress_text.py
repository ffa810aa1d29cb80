"""`migrate.progress` readings as one line of text, and as the event's fields."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runner.progress import (
    INNODB_TRX_SOURCE,
    STATEMENT_LENGTH,
    Blocker,
    Reading,
    cut_statement,
    format_duration,
    progress_text,
)

ALTER = "ALTER TABLE entry ADD COLUMN note text"


def pg(**fields: Any) -> Reading:
    """A PostgreSQL reading of an active session."""
    return Reading(server="postgresql", pid=101, active=True, **fields)


def my(**fields: Any) -> Reading:
    """A MariaDB/MySQL reading of an active session."""
    return Reading(server="mysql", pid=17, active=True, **fields)


def test_an_index_build_shows_its_phase_percent_and_counts() -> None:
    reading = pg(statement="CREATE INDEX CONCURRENTLY ix_entry_account_id ON entry (account_id)",
                 state="active", operation="CREATE INDEX CONCURRENTLY",
                 relation="ix_entry_account_id", table="entry",
                 phase="building index: scanning table", percent=46.15, done=12000,
                 total=26000, unit="blocks")
    assert reading.text("3f2a1b9c", 130, 130) == (
        "3f2a1b9c building ix_entry_account_id: scanning table 46% (12000/26000 blocks),"
        " 2m10s")


def test_other_operations_name_their_table() -> None:
    vacuum = pg(operation="VACUUM FULL", table="entry", phase="seq scanning heap",
                percent=10.0, done=10, total=100, unit="blocks")
    assert vacuum.text("r", 1, 1) == (
        "r rewriting entry (VACUUM FULL): seq scanning heap 10% (10/100 blocks), 0m01s")
    cluster = pg(operation="CLUSTER", table="entry", phase="index scanning heap", done=5000,
                 unit="tuples")
    assert cluster.text("r", 1, 1) == "r clustering entry: index scanning heap (5000 tuples), 0m01s"
    reindex = pg(operation="REINDEX CONCURRENTLY", relation="ix", table="entry",
                 phase="waiting for old snapshots", percent=0.0, done=0, total=1,
                 unit="transactions")
    assert reindex.text("r", 1, 1) == (
        "r rebuilding ix: waiting for old snapshots 0% (0/1 transactions), 0m01s")
    unnamed = pg(operation="CREATE INDEX", table="entry", phase="initializing")
    assert unnamed.text("r", 1, 1) == "r building an index on entry: initializing, 0m01s"


def test_a_blocked_statement_names_who_holds_the_lock() -> None:
    reading = pg(statement=ALTER, state="active", wait_event_type="Lock",
                 wait_event="relation", waiting_for="Lock:relation",
                 blockers=(Blocker(pid=4242, application_name="psql", user="app",
                                   state="idle in transaction", xact_age=182.9),),
                 blocker_source="pg_blocking_pids")
    assert reading.text("3f2a1b9c", 12, 12) == (
        "3f2a1b9c waiting for a lock (Lock:relation) held by pid 4242 (psql, idle in"
        f" transaction for 3m02s): {ALTER}, 0m12s")


def test_several_blockers_and_what_is_known_of_each() -> None:
    reading = pg(statement=ALTER, waiting_for="Lock:relation", blocker_source="pg_blocking_pids",
                 blockers=(Blocker(pid=1, user="app", state="active", xact_age=5),
                           Blocker(pid=2, application_name="worker", state="active"),
                           Blocker(pid=3)))
    assert reading.text("r", 0, 0) == (
        "r waiting for a lock (Lock:relation) held by pid 1 (app, active, in a transaction for"
        f" 0m05s) and pid 2 (worker, active) and pid 3: {ALTER}, 0m00s")


def test_mariadb_candidates_are_only_perhaps_the_holders() -> None:
    reading = my(statement="ALTER TABLE entry ADD COLUMN note INT",
                 state="Waiting for table metadata lock",
                 waiting_for="Waiting for table metadata lock", blocker_source=INNODB_TRX_SOURCE,
                 blockers=(Blocker(pid=5, user="app", state="Sleep", xact_age=61),
                           Blocker(pid=6, user="report", state="Sending data", xact_age=3)))
    assert reading.candidates
    assert reading.text("r", 2, 2) == (
        "r waiting for a lock (Waiting for table metadata lock) perhaps held by connection 5"
        " (app, Sleep, in a transaction for 1m01s) or connection 6 (report, Sending data, in"
        " a transaction for 0m03s): ALTER TABLE entry ADD COLUMN note INT, 0m02s")
    exact = my(waiting_for="InnoDB row lock", blocker_source="information_schema.INNODB_LOCK_WAITS",
               blockers=(Blocker(pid=5, user="app", state="Sleep"),))
    assert not exact.candidates
    assert exact.text("r", 2, 2) == (
        "r waiting for a lock (InnoDB row lock) held by connection 5 (app, Sleep), 0m02s")


def test_a_waiting_statement_with_nobody_named() -> None:
    reading = my(statement=ALTER, waiting_for="Waiting for backup lock")
    assert reading.text("r", 2, 2) == (
        f"r waiting for a lock (Waiting for backup lock): {ALTER}, 0m02s")


def test_mariadb_stage_progress() -> None:
    statement = "ALTER TABLE big MODIFY v BIGINT, ALGORITHM=COPY"
    reading = my(statement=statement, state="copy to tmp table", phase="stage 1 of 2",
                 percent=45.9)
    assert reading.text("r", 12, 12) == (
        f"r copy to tmp table: stage 1 of 2, 45%: {statement}, 0m12s")


def test_a_running_statement_and_its_wait_event_or_state() -> None:
    update = "UPDATE entry SET note = ''"
    assert pg(statement=update, state="active", wait_event_type="IO",
              wait_event="DataFileRead").text("r", 3, 3) == (
        f"r running (IO:DataFileRead): {update}, 0m03s")
    assert pg(statement=update, state="active").text("r", 3, 3) == f"r running: {update}, 0m03s"
    assert my(statement=update, state="Updating").text("r", 3, 3) == (
        f"r running (Updating): {update}, 0m03s")


def test_between_statements_the_last_one_is_named() -> None:
    idle = Reading(server="postgresql", pid=1, active=False, state="idle in transaction",
                   statement=ALTER)
    assert idle.text("r", 3, 3) == (
        f"r between statements (idle in transaction), last: {ALTER}, 0m03s")
    sleeping = Reading(server="mysql", pid=1, active=False)
    assert sleeping.text("r", 3, 3) == "r between statements, 0m03s"


def test_no_reading() -> None:
    assert progress_text(None, "r", 3.9, 3.9) == "r running, 0m03s"
    reading = pg(statement="SELECT 1")
    assert progress_text(reading, "r", 1, 1) == reading.text("r", 1, 1)


def test_the_run_shows_when_longer_than_the_revision() -> None:
    assert pg(statement="SELECT 1").text("r", 130, 340.5) == (
        "r running: SELECT 1, 2m10s (run 5m40s)")
    assert pg(statement="SELECT 1").text("r", 130, 130.9) == "r running: SELECT 1, 2m10s"


@pytest.mark.parametrize(("seconds", "said"), [
    (0, "0m00s"), (12.99, "0m12s"), (182, "3m02s"), (3599, "59m59s"), (3600, "1h00m00s"),
    (3849, "1h04m09s"), (-1, "0m00s"),
])
def test_durations(seconds: float, said: str) -> None:
    assert format_duration(seconds) == said


def test_long_statements_are_cut_to_one_line_of_200_characters() -> None:
    long = "INSERT INTO entry (note)\n    VALUES " + ", ".join(["('x')"] * 100)
    cut = cut_statement(long)
    assert cut is not None and len(cut) == STATEMENT_LENGTH == 200
    assert cut.startswith("INSERT INTO entry (note) VALUES ('x'), ") and cut.endswith("...")
    exact = "S" * 200
    assert cut_statement(exact) == exact
    assert cut_statement("  \n ") is None and cut_statement(None) is None
    text = pg(statement=long).text("r", 1, 1)
    assert text == f"r running: {cut}, 0m01s"
    # A reading built by hand is cut when rendered too.
    assert "\n" not in text and "(note) VALUES" in text


def test_fields_are_json_with_the_blockers_as_objects() -> None:
    reading = pg(statement=ALTER, waiting_for="Lock:relation", percent=33.333333,
                 blockers=(Blocker(pid=4242, application_name="psql", xact_age=1.5),),
                 blocker_source="pg_blocking_pids")
    fields = json.loads(json.dumps(reading.fields()))
    assert fields["blockers"] == [{"pid": 4242, "application_name": "psql", "user": None,
                                   "state": None, "xact_age": 1.5}]
    assert fields["percent"] == 33.3
    assert fields["statement"] == ALTER and fields["waiting_for"] == "Lock:relation"
    assert {"server", "pid", "active", "state", "wait_event_type", "wait_event", "phase",
            "done", "total", "unit", "statement_age", "operation", "relation",
            "table", "blocker_source"} <= set(fields)

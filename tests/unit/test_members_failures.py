"""What the members store says when SQLite refuses a write: busy, full, read-only, each with its own line."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC
from datetime import datetime

import pytest

from app.core.settings import SettingsError
from app.core.settings import load_settings
from app.core.snapshot import Track
from app.warm import members
from tests.support.tracks import make_track

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def database(tmp_path):
    path = tmp_path / "listens.sqlite3"
    connection = members.connect(path)
    members.add_member(connection, "alice", "alice", public=True, now=NOW)
    connection.close()
    return path


def failure_of(write) -> sqlite3.Error:
    with pytest.raises(sqlite3.Error) as caught:
        write()
    return caught.value


def record_a_run(connection) -> None:
    members.record_run(connection, 1, NOW, 0, "warm outcome=published")


def test_read_only_database_is_named_read_only(database):
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, isolation_level=None)) as connection:
        kind, message = members.describe_failure(failure_of(lambda: record_a_run(connection)), database)

    assert kind == "readonly"
    assert "read-only" in message and "permissions" not in message and "\n" not in message


def test_locked_database_is_named_busy_with_its_timeout(database):
    with (
        closing(sqlite3.connect(database, isolation_level=None)) as holder,
        closing(members.connect(database, busy_timeout_s=0.2)) as connection,
    ):
        holder.execute("BEGIN IMMEDIATE")
        kind, message = members.describe_failure(failure_of(lambda: record_a_run(connection)), database, 0.2)

    assert kind == "busy"
    assert "locked" in message and "0.2 s" in message


def test_full_database_is_named_full(database):
    with closing(members.connect(database)) as connection:
        page_count = connection.execute("PRAGMA page_count").fetchone()[0]
        connection.execute(f"PRAGMA max_page_count = {page_count}")
        error = failure_of(
            lambda: connection.executescript(
                "BEGIN; CREATE TABLE filler (x); INSERT INTO filler VALUES (zeroblob(100000)); COMMIT;"
            )
        )
    kind, message = members.describe_failure(error, database)

    assert kind == "full"
    assert "disk is full" in message and "permissions" not in message


def test_record_outcomes_skips_member_relinked_since_the_fetch(database):
    with closing(members.connect(database)) as connection:
        track = members.list_members(connection)[0].last_track
        assert track is None
        members.set_lastfm_username(connection, "alice", "alice2")
        fetched = _track("alice", "alice")
        members.record_outcomes(connection, [members.FetchOutcome(1, "ok", fetched, NOW, "alice")])
        assert members.list_members(connection)[0].last_track is None
        members.record_outcomes(connection, [members.FetchOutcome(1, "ok", _track("alice", "ALICE2"), NOW, "ALICE2")])
        assert members.list_members(connection)[0].last_track is not None


def _track(username: str, account: str) -> Track:
    return make_track(username, lastfm_username=account, fetched_at=NOW)


@pytest.mark.parametrize("raw", ["0", "-1", "61", "soon"])
def test_db_busy_seconds_out_of_range_is_refused(raw):
    with pytest.raises(SettingsError, match="LISTENS_DB_BUSY_SECONDS"):
        load_settings({"LISTENS_DB_BUSY_SECONDS": raw})


def test_db_busy_seconds_defaults_to_members_busy_timeout():
    assert load_settings({}).db_busy_s == members.BUSY_TIMEOUT_S
    assert load_settings({"LISTENS_DB_BUSY_SECONDS": "2.5"}).db_busy_s == 2.5

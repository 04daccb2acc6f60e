"""The members-store tests of tests/unit/test_members.py, on SQLite and on PostgreSQL.

Every test there that takes the `connection` fixture runs here once per
engine; the tests below add what sharing one database across hosts needs.
"""

from __future__ import annotations

import inspect
import sqlite3
from contextlib import closing
from datetime import timedelta

import psycopg
import pytest

from app.warm import members as module
from app.warm.members import FetchOutcome
from app.warm.members import MembersError
from tests.unit import test_members as _base

NOW = _base.NOW
add = _base.add
make_track = _base.make_track
by_name = _base.by_name

for _name, _test in vars(_base).items():
    if _name.startswith("test_") and "connection" in inspect.signature(_test).parameters:
        globals()[_name] = _test


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    """Where a members database goes: a SQLite path not created yet, or a new PostgreSQL database."""
    return tmp_path / "members.sqlite3" if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.fixture
def connection(database):
    with closing(module.connect(database)) as connection:
        yield connection


def test_the_engine_rejects_a_duplicate_name_in_another_case_even_past_the_code(connection):
    add(connection, "alice", "alice_fm")
    for username, lastfm_username in (("ALICE", "other_fm"), ("carol", "ALICE_FM")):
        with pytest.raises(module.ERRORS):
            with connection:
                connection.execute("BEGIN IMMEDIATE")
                connection.execute(
                    "INSERT INTO members (username, lastfm_username, public, created_at) VALUES (?, ?, 1, ?)",
                    (username, lastfm_username, "2026-01-02T03:05:00Z"),
                )
    assert list(by_name(connection)) == ["alice"]


def test_members_found_by_name_in_any_case(connection):
    add(connection, "Alice", "alice_fm")
    module.set_visibility(connection, "ALICE", False)
    assert by_name(connection)["Alice"].public is False
    with pytest.raises(MembersError, match="already linked"):
        add(connection, "bob", "ALICE_FM")


def test_record_outcomes_never_replaces_a_newer_track_with_an_older_one(connection):
    alice = add(connection, "alice")
    newer = make_track(alice, artist="Newer")
    older = make_track(alice, artist="Older")
    older = type(older)(**{**older.__dict__, "fetched_at": NOW - timedelta(minutes=5)})
    module.record_outcomes(connection, [FetchOutcome(alice.id, "ok", newer)])
    # A second warm run, started earlier, writes late: the newer track stays.
    module.record_outcomes(connection, [FetchOutcome(alice.id, "ok", older)])
    assert by_name(connection)["alice"].last_track.artist == "Newer"


def test_record_outcomes_stores_a_track_only_for_the_account_it_was_fetched_for(connection):
    alice = add(connection, "alice", "old_fm")
    track = make_track(alice)
    module.set_lastfm_username(connection, "alice", "new_fm")
    module.record_outcomes(connection, [FetchOutcome(alice.id, "ok", track, lastfm_username="old_fm")])
    assert by_name(connection)["alice"].last_track is None
    module.record_outcomes(connection, [FetchOutcome(alice.id, "ok", track, lastfm_username="NEW_FM")])
    assert by_name(connection)["alice"].last_track is not None


def test_a_newer_schema_is_refused_and_never_written(request, tmp_path):
    path = tmp_path / "members.sqlite3"
    module.connect(path).close()
    import sqlite3

    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {module.SCHEMA_VERSION + 1}")
    raw.close()
    before = path.read_bytes()
    for read_only in (False, True):
        with pytest.raises(module.DatabaseError, match="newer than this release") as caught:
            module.connect(path, read_only=read_only)
        assert caught.value.kind == "newer"
        assert "\n" not in str(caught.value)
    assert path.read_bytes() == before


def test_a_newer_postgresql_schema_is_refused_and_never_written(postgres_url):
    module.connect(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as raw:
        raw.execute("DROP TABLE runs")
        raw.execute("UPDATE schema_version SET version = version + 1")
    for read_only in (False, True):
        with pytest.raises(module.DatabaseError, match="newer than this release") as caught:
            module.connect(postgres_url, read_only=read_only)
        assert caught.value.kind == "newer"
        assert "s3cret" not in str(caught.value)
    with psycopg.connect(postgres_url) as raw:
        # Not re-created: the refused connection wrote nothing.
        assert raw.execute("SELECT to_regclass('runs')").fetchone()[0] is None


def test_postgresql_writes_wait_for_a_lock_then_fail_as_busy(postgres_url):
    connection = module.connect(postgres_url, busy_timeout_s=0.3)
    alice = add(connection, "alice")
    with psycopg.connect(postgres_url) as holder:
        holder.execute("LOCK TABLE members IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(module.ERRORS) as caught:
            module.record_outcomes(connection, [FetchOutcome(alice.id, "ok", make_track(alice))])
    kind, message = module.describe_failure(caught.value, postgres_url, 0.3)
    assert kind == "busy"
    assert "s3cret" not in message
    connection.close()


def test_queries_with_a_literal_percent_sign_run_on_both_engines(connection):
    module.record_run(connection, 5, NOW, 0, "warm outcome=published 100% done")
    module.record_run(connection, 6, NOW, 1, "warm outcome=failed")
    assert (
        connection.execute("SELECT max(generation) FROM runs WHERE summary LIKE 'warm outcome=published %'").fetchone()[
            0
        ]
        == 5
    )
    assert (
        connection.execute(
            "SELECT count(*) FROM runs WHERE summary LIKE ? AND exit_code = ?", ("%100%%", 0)
        ).fetchone()[0]
        == 1
    )


# -- read-only, for reports (listens status) ------------------------------------------------------


@pytest.fixture
def empty_database(database):
    """A database without the listens tables: an empty SQLite file, or a new PostgreSQL database."""
    if not module.is_postgres(database):
        database.touch()
    return database


def tables_in(database) -> set[str]:
    if module.is_postgres(database):
        with psycopg.connect(database) as raw:
            return {row[0] for row in raw.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    with closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as raw:
        return {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_read_only_creates_no_table_and_finds_no_run(empty_database):
    with closing(module.connect(empty_database, read_only=True)) as connection:
        assert module.last_run(connection) is None

    assert tables_in(empty_database) == set()


def test_read_only_reads_what_is_there_and_refuses_every_write(database):
    with closing(module.connect(database)) as connection:
        add(connection, "alice")
        module.record_run(connection, 5, NOW, 0, "warm outcome=published")

    with closing(module.connect(database, read_only=True)) as connection:
        assert module.last_run(connection)["generation"] == 5
        with pytest.raises(module.ERRORS):
            add(connection, "bob")
        with pytest.raises(module.ERRORS):
            module.record_run(connection, 6, NOW, 0, "warm outcome=published")

    with closing(module.connect(database)) as connection:
        assert list(by_name(connection)) == ["alice"]
        assert module.last_run(connection)["generation"] == 5

"""The members store on a throwaway SQLite file: changes, validation, last known tracks and runs."""

from __future__ import annotations

import contextlib
import sqlite3
from contextlib import closing
from datetime import UTC
from datetime import datetime

import pytest

from app.core.snapshot import Track
from app.warm import members as module
from app.warm.members import DatabaseError
from app.warm.members import FetchOutcome
from app.warm.members import MembersError
from tests.support.tracks import make_track

NOW = datetime(2026, 1, 2, 3, 5, 0, tzinfo=UTC)


@pytest.fixture
def connection(tmp_path):
    connection = module.connect(tmp_path / "members.sqlite3")
    yield connection
    connection.close()


def add(connection, username: str, lastfm_username: str | None = None, *, public: bool = True) -> module.Member:
    if lastfm_username is None:
        lastfm_username = f"{username}_fm"
    return module.add_member(connection, username, lastfm_username, public=public, now=NOW)


def track_of(member: module.Member, **fields) -> Track:
    return make_track(member.username, lastfm_username=member.lastfm_username, fetched_at=NOW, **fields)


def remember(connection, member: module.Member, **fields) -> Track:
    """Record a successful fetch of member's track (built from fields) and return the track."""
    track = track_of(member, **fields)
    module.record_outcomes(connection, [FetchOutcome(member.id, "ok", track)])
    return track


@contextlib.contextmanager
def refused(connection, message: str):
    """Expect the block to raise MembersError matching message and to leave the members as they were."""
    before = module.list_members(connection)
    with pytest.raises(MembersError, match=message):
        yield
    assert module.list_members(connection) == before


def by_name(connection) -> dict[str, module.Member]:
    return {member.username: member for member in module.list_members(connection)}


# -- connect -------------------------------------------------------------------------------


def test_connect_creates_the_database_and_its_folder(tmp_path):
    path = tmp_path / "new" / "folder" / "members.sqlite3"

    connection = module.connect(path)
    connection.close()

    assert path.is_file()


def test_connect_reopens_an_existing_database(tmp_path):
    path = tmp_path / "members.sqlite3"
    first = module.connect(path)
    add(first, "alice")
    first.close()

    second = module.connect(path)
    try:
        assert [member.username for member in module.list_members(second)] == ["alice"]
    finally:
        second.close()


def older_release_database(path) -> None:
    """Write a members database as a release before the poll schedule left it: no next_poll_at, user_version 0."""
    schema = module.SCHEMA.replace("created_at TEXT NOT NULL,\n    next_poll_at TEXT\n", "created_at TEXT NOT NULL\n")
    assert schema != module.SCHEMA
    with closing(sqlite3.connect(path)) as raw:
        raw.executescript(schema)
        raw.execute("INSERT INTO members (username, lastfm_username, created_at) VALUES ('alice', 'rj', '2026-01-02')")
        raw.commit()


def member_columns(path) -> set[str]:
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as raw:
        return {row[1] for row in raw.execute("PRAGMA table_info(members)")}


def test_connect_brings_an_older_release_database_up_to_date(tmp_path):
    path = tmp_path / "members.sqlite3"
    older_release_database(path)

    with closing(module.connect(path)) as connection:
        assert [(m.username, m.next_poll_at) for m in module.list_members(connection)] == [("alice", None)]

    assert "next_poll_at" in member_columns(path)


def test_connect_read_only_migrates_nothing_and_writes_nothing(tmp_path):
    path = tmp_path / "members.sqlite3"
    older_release_database(path)
    before = path.read_bytes()

    with closing(module.connect(path, read_only=True)) as connection:
        assert module.last_run(connection) is None
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            add(connection, "bob")

    assert "next_poll_at" not in member_columns(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "relative",
    [
        pytest.param("file/members.sqlite3", id="under-a-regular-file"),
        pytest.param("file/deeper/members.sqlite3", id="deep-under-a-regular-file"),
        pytest.param("folder", id="a-directory"),
        pytest.param("garbage.sqlite3", id="not-a-database"),
    ],
)
def test_connect_raises_database_error_naming_the_path_when_path_is_unusable(tmp_path, relative):
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "folder").mkdir()
    (tmp_path / "garbage.sqlite3").write_bytes(b"this is not an SQLite database, just some bytes" * 100)
    path = tmp_path / relative

    with pytest.raises(DatabaseError) as caught:
        module.connect(path)

    message = str(caught.value)
    assert str(path) in message
    assert "\n" not in message


# -- add and list ---------------------------------------------------------------------------


def test_list_members_is_empty_for_a_new_database(connection):
    assert module.list_members(connection) == []


def test_add_member_returns_the_new_member(connection):
    member = add(connection, "alice", "RJ")

    summary = (member.username, member.lastfm_username, member.public, member.lastfm_status)

    assert summary == ("alice", "RJ", True, "unknown")


def test_add_member_stores_the_member(connection):
    member = add(connection, "alice", "RJ")

    assert module.list_members(connection) == [member]


def test_add_member_stores_a_private_member(connection):
    add(connection, "alice", public=False)

    assert by_name(connection)["alice"].public is False


def test_list_members_sorts_by_username_ignoring_case(connection):
    for name in ["carol", "Bob", "alice"]:
        add(connection, name)

    assert [member.username for member in module.list_members(connection)] == ["alice", "Bob", "carol"]


def test_list_members_public_only_leaves_private_members_out(connection):
    add(connection, "alice")
    add(connection, "bob", public=False)

    assert [member.username for member in module.list_members(connection, public_only=True)] == ["alice"]


@pytest.mark.parametrize("lastfm_username", ["a", "1", "_x", "RJ", "a-b_c", "abcdefghij12345", "-"])
def test_add_member_accepts_valid_lastfm_username(connection, lastfm_username):
    add(connection, "alice", lastfm_username)

    assert by_name(connection)["alice"].lastfm_username == lastfm_username


@pytest.mark.parametrize(
    "lastfm_username",
    [
        "",
        "abcdefghij123456",
        "a b",
        "a.b",
        "é",
        "<script>",
        "a/b",
        "a?b",
        "rj\n",
        "\nrj",
        "rj\x00",
        " rj",
    ],
)
def test_add_member_rejects_invalid_lastfm_username(connection, lastfm_username):
    with refused(connection, "not a valid Last.fm username"):
        add(connection, "alice", lastfm_username)


@pytest.mark.parametrize("username", ["", "-alice", ".alice", "a b", "a/b", "<b>", "x" * 31, "bob\n", "é"])
def test_add_member_rejects_invalid_username(connection, username):
    with refused(connection, "not a valid member name"):
        module.add_member(connection, username, "rj", public=True, now=NOW)


@pytest.mark.parametrize("username", ["alice", "Alice", "ALICE"])
def test_add_member_rejects_duplicate_username_in_any_case(connection, username):
    add(connection, "alice", "rj")

    with refused(connection, "already exists"):
        add(connection, username, "someone_else")


@pytest.mark.parametrize("lastfm_username", ["rj", "RJ", "Rj"])
def test_add_member_rejects_lastfm_username_linked_to_another_member(connection, lastfm_username):
    add(connection, "alice", "rj")

    with refused(connection, "already linked to member 'alice'"):
        add(connection, "bob", lastfm_username)


def test_members_error_message_is_one_line(connection):
    add(connection, "alice", "rj")

    with pytest.raises(MembersError) as caught:
        add(connection, "bob", "rj")

    assert "\n" not in str(caught.value)


# -- remove --------------------------------------------------------------------------------


def test_remove_member_removes_only_that_member(connection):
    add(connection, "alice")
    add(connection, "bob")

    module.remove_member(connection, "alice")

    assert [member.username for member in module.list_members(connection)] == ["bob"]


def test_remove_member_forgets_the_last_track(connection):
    alice = add(connection, "alice")
    remember(connection, alice)

    module.remove_member(connection, "alice")

    assert connection.execute("SELECT COUNT(*) FROM last_tracks").fetchone()[0] == 0


def test_remove_member_raises_when_member_is_unknown(connection):
    add(connection, "alice")

    with refused(connection, "no member named 'nobody'"):
        module.remove_member(connection, "nobody")


# -- visibility ---------------------------------------------------------------------------------


@pytest.mark.parametrize("public", [False, True])
def test_set_visibility_makes_member_public_or_private(connection, public):
    add(connection, "alice", public=not public)

    module.set_visibility(connection, "alice", public)

    assert by_name(connection)["alice"].public is public


@pytest.mark.parametrize(
    ("visibility", "kept"),
    [((False,), False), ((False, True), False), ((True,), True)],
    ids=["private-forgets-it", "public-again-does-not-bring-it-back", "public-keeps-it"],
)
def test_set_visibility_and_the_last_track(connection, visibility, kept):
    alice = add(connection, "alice")
    track = remember(connection, alice)

    for public in visibility:
        module.set_visibility(connection, "alice", public)

    assert by_name(connection)["alice"].last_track == (track if kept else None)


def test_set_visibility_raises_when_member_is_unknown(connection):
    add(connection, "alice")

    with refused(connection, "no member named"):
        module.set_visibility(connection, "nobody", False)


# -- set_lastfm_username ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new"), [("old_name", "new_name"), ("rj", "RJ")], ids=["another-account", "own-name-in-another-case"]
)
def test_set_lastfm_username_links_the_new_name(connection, old, new):
    add(connection, "alice", old)

    module.set_lastfm_username(connection, "alice", new)

    assert by_name(connection)["alice"].lastfm_username == new


def test_set_lastfm_username_forgets_the_old_accounts_track(connection):
    alice = add(connection, "alice", "old_name")
    remember(connection, alice)

    module.set_lastfm_username(connection, "alice", "new_name")

    member = by_name(connection)["alice"]
    assert (member.last_track, member.lastfm_status) == (None, "unknown")


@pytest.mark.parametrize("lastfm_username", ["rj", "RJ"])
def test_set_lastfm_username_rejects_name_linked_to_another_member(connection, lastfm_username):
    add(connection, "alice", "rj")
    add(connection, "bob", "bob_fm")

    with refused(connection, "already linked to member 'alice'"):
        module.set_lastfm_username(connection, "bob", lastfm_username)


@pytest.mark.parametrize("lastfm_username", ["", "a b", "a.b", "é", "<script>", "abcdefghij123456", "rj\n"])
def test_set_lastfm_username_rejects_invalid_name(connection, lastfm_username):
    add(connection, "alice", "rj")

    with refused(connection, "not a valid Last.fm username"):
        module.set_lastfm_username(connection, "alice", lastfm_username)


def test_set_lastfm_username_raises_when_member_is_unknown(connection):
    add(connection, "alice")

    with refused(connection, "no member named"):
        module.set_lastfm_username(connection, "nobody", "free_name")


# -- record_outcomes ---------------------------------------------------------------------------


@pytest.mark.parametrize("now_playing", [False, True])
def test_record_outcomes_stores_the_track(connection, now_playing):
    alice = add(connection, "alice")
    track = track_of(alice, now_playing=now_playing)

    module.record_outcomes(connection, [FetchOutcome(alice.id, "ok", track)])

    member = by_name(connection)["alice"]
    assert (member.last_track, member.lastfm_status) == (track, "ok")


def test_record_outcomes_replaces_the_previous_track(connection):
    alice = add(connection, "alice")
    remember(connection, alice, artist="Old")
    newer = track_of(alice, artist="New")

    module.record_outcomes(connection, [FetchOutcome(alice.id, "ok", newer)])

    assert by_name(connection)["alice"].last_track == newer


@pytest.mark.parametrize("status", ["not_found", "private"])
def test_record_outcomes_clears_the_track_when_member_is_gone(connection, status):
    alice = add(connection, "alice")
    remember(connection, alice)

    module.record_outcomes(connection, [FetchOutcome(alice.id, status, None)])

    member = by_name(connection)["alice"]
    assert (member.last_track, member.lastfm_status) == (None, status)


def test_record_outcomes_clears_the_track_when_member_has_no_scrobbles(connection):
    alice = add(connection, "alice")
    remember(connection, alice)

    module.record_outcomes(connection, [FetchOutcome(alice.id, "ok", None)])

    assert by_name(connection)["alice"].last_track is None


def test_record_outcomes_skips_member_who_became_private(connection):
    alice = add(connection, "alice")
    module.set_visibility(connection, "alice", False)

    remember(connection, alice)

    member = by_name(connection)["alice"]
    assert (member.last_track, member.lastfm_status) == (None, "unknown")


def test_record_outcomes_skips_member_who_was_removed(connection):
    alice = add(connection, "alice")
    module.remove_member(connection, "alice")

    remember(connection, alice)

    assert connection.execute("SELECT COUNT(*) FROM last_tracks").fetchone()[0] == 0


def test_record_outcomes_still_stores_the_other_members(connection):
    alice = add(connection, "alice")
    bob = add(connection, "bob")
    module.remove_member(connection, "alice")
    track = track_of(bob)

    outcomes = [FetchOutcome(alice.id, "ok", track_of(alice)), FetchOutcome(bob.id, "ok", track)]

    module.record_outcomes(connection, outcomes)

    assert by_name(connection)["bob"].last_track == track


# -- runs ---------------------------------------------------------------------------------------


def test_record_run_is_returned_by_last_run(connection):
    module.record_run(connection, 1000, NOW, 0, "warm outcome=published")

    run = module.last_run(connection)
    assert (run["generation"], run["exit_code"], run["summary"]) == (1000, 0, "warm outcome=published")


def test_last_run_is_none_without_runs(connection):
    assert module.last_run(connection) is None


def test_record_run_keeps_only_the_newest_runs(connection):
    total = module.RUNS_KEPT + 7
    # Recorded out of order: the newest generations are kept, not the latest inserts.
    for generation in [*range(total, total // 2, -1), *range(1, total // 2 + 1)]:
        module.record_run(connection, generation, NOW, 0, f"run {generation}")

    kept = [row[0] for row in connection.execute("SELECT generation FROM runs ORDER BY generation")]
    assert kept == list(range(total - module.RUNS_KEPT + 1, total + 1))


def test_last_run_is_the_newest_generation(connection):
    module.record_run(connection, 300, NOW, 0, "newest")
    module.record_run(connection, 100, NOW, 1, "older, recorded later")

    assert module.last_run(connection)["summary"] == "newest"

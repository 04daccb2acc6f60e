"""warm.merge: how a run's fetch results meet each member's last known track; and main's config errors."""

from __future__ import annotations

import logging
import socket
from datetime import datetime
from datetime import timedelta

import pytest

from app.core.snapshot import Track
from app.warm import job as module
from app.warm.lastfm import LastfmPermanentError
from app.warm.lastfm import LastfmTransientError
from app.warm.members import Member
from tests.support.clock import START
from tests.support.tracks import make_track

# Where the tracks' fetch times default to.
STARTED = START
FRESH_S = 420
MAX_STALE_S = 86400
FAKE_URL = "http://127.0.0.1:9/2.0/"


def make_member(member_id: int, username: str, last_track: Track | None = None) -> Member:
    return Member(member_id, username, f"{username}_fm", True, "ok", last_track)


def transient() -> LastfmTransientError:
    return LastfmTransientError("rj: HTTP 503", status=503)


def permanent(reason: str) -> LastfmPermanentError:
    return LastfmPermanentError(f"rj: Last.fm error ({reason})", reason=reason, status=404, code=6)


def merge(public_members, results, *, started=STARTED, fresh_s=FRESH_S, max_stale_s=MAX_STALE_S):
    return module.merge(public_members, results, started=started, fresh_s=fresh_s, max_stale_s=max_stale_s)


def ago(seconds: float) -> datetime:
    return STARTED - timedelta(seconds=seconds)


# -- successful fetches ----------------------------------------------------------------------


def test_merge_publishes_a_fetched_track():
    track = make_track("alice")

    merged = merge([make_member(1, "alice", make_track("alice", fetched_at=ago(300), artist="Old"))], {1: track})

    assert merged.tracks == [track]


def test_merge_publishes_nothing_for_a_member_without_scrobbles():
    merged = merge([make_member(1, "alice", make_track("alice", fetched_at=ago(300)))], {1: module.NO_SCROBBLES})

    assert (merged.tracks, merged.fetched) == ([], 1)


def test_merge_publishes_nothing_without_members():
    merged = merge([], {})

    assert (merged.tracks, merged.fetched, merged.carried, merged.dropped, merged.failed, merged.last_updated) == (
        [],
        0,
        0,
        0,
        0,
        None,
    )


# -- transient failures ------------------------------------------------------------------------


@pytest.mark.parametrize("age_s", [0, 60, MAX_STALE_S / 2, MAX_STALE_S])
def test_merge_carries_last_track_when_fetch_failed_within_max_stale(age_s):
    last = make_track("alice", fetched_at=ago(age_s))

    merged = merge([make_member(1, "alice", last)], {1: transient()})

    assert merged.tracks == [last]


@pytest.mark.parametrize("age_s", [MAX_STALE_S + 1, MAX_STALE_S * 3])
def test_merge_drops_last_track_when_fetch_failed_beyond_max_stale(age_s):
    merged = merge([make_member(1, "alice", make_track("alice", fetched_at=ago(age_s)))], {1: transient()})

    assert merged.tracks == []


def test_merge_honours_a_custom_max_stale():
    last = make_track("alice", fetched_at=ago(600))

    merged = merge([make_member(1, "alice", last)], {1: transient()}, max_stale_s=599)

    assert merged.tracks == []


def test_merge_publishes_nothing_when_fetch_failed_without_last_track():
    merged = merge([make_member(1, "alice")], {1: transient()})

    assert (merged.tracks, merged.failed, merged.carried) == ([], 1, 0)


def test_merge_carries_a_member_the_schedule_deferred_without_counting_a_failure():
    last = make_track("alice", fetched_at=ago(60))

    merged = merge([make_member(1, "alice", last)], {})

    assert (merged.tracks, merged.failed, merged.deferred, merged.carried) == ([last], 0, 1, 1)


def test_merge_carries_last_track_under_the_members_current_names():
    last = make_track("old_name", fetched_at=ago(60))
    member = Member(1, "alice", "new_fm", True, "ok", last)

    merged = merge([member], {1: transient()})

    assert [(track.username, track.lastfm_username) for track in merged.tracks] == [("alice", "new_fm")]


# -- permanent failures -------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["not_found", "private"])
def test_merge_drops_member_at_once_when_fetch_failed_permanently(reason):
    merged = merge([make_member(1, "alice", make_track("alice", fetched_at=ago(1)))], {1: permanent(reason)})

    assert (merged.tracks, merged.dropped, merged.carried) == ([], 1, 0)


# -- carried "now playing" -----------------------------------------------------------------------


def test_merge_shows_old_carried_now_playing_as_played_at_its_fetch_time():
    fetched_at = ago(FRESH_S + 1)
    last = make_track("alice", fetched_at=fetched_at, now_playing=True)

    merged = merge([make_member(1, "alice", last)], {1: transient()})

    assert [(track.now_playing, track.played_at) for track in merged.tracks] == [(False, fetched_at)]


@pytest.mark.parametrize("age_s", [0, 60, FRESH_S])
def test_merge_keeps_recent_carried_now_playing(age_s):
    last = make_track("alice", fetched_at=ago(age_s), now_playing=True)

    merged = merge([make_member(1, "alice", last)], {1: transient()})

    assert merged.tracks == [last]


def test_merge_keeps_a_fetched_now_playing():
    track = make_track("alice", now_playing=True)

    merged = merge([make_member(1, "alice")], {1: track}, fresh_s=1)

    assert merged.tracks == [track]


# -- counts ----------------------------------------------------------------------------------------


def test_merge_counts_each_kind_of_result():
    public_members = [
        make_member(1, "fetched"),
        make_member(2, "silent"),
        make_member(3, "carried", make_track("carried", fetched_at=ago(600))),
        make_member(4, "expired", make_track("expired", fetched_at=ago(MAX_STALE_S + 60))),
        make_member(5, "gone", make_track("gone", fetched_at=ago(60))),
        make_member(6, "hidden"),
        make_member(7, "unknown_failure"),
    ]
    results = {
        1: make_track("fetched"),
        2: module.NO_SCROBBLES,
        3: transient(),
        4: transient(),
        5: permanent("not_found"),
        6: permanent("private"),
        7: transient(),
    }

    merged = merge(public_members, results)

    assert (merged.fetched, merged.carried, merged.dropped, merged.failed) == (2, 1, 2, 3)
    assert [track.username for track in merged.tracks] == ["fetched", "carried"]


# -- last_updated ----------------------------------------------------------------------------------


def test_merge_last_updated_is_the_newest_successful_fetch():
    public_members = [make_member(1, "alice"), make_member(2, "bob"), make_member(3, "carol")]
    results = {
        1: make_track("alice", fetched_at=ago(20)),
        2: make_track("bob", fetched_at=ago(5)),
        3: make_track("carol", fetched_at=ago(40)),
    }

    assert merge(public_members, results).last_updated == ago(5)


def test_merge_last_updated_ignores_carried_tracks():
    public_members = [make_member(1, "alice"), make_member(2, "bob", make_track("bob", fetched_at=ago(1)))]
    results = {1: make_track("alice", fetched_at=ago(30)), 2: transient()}

    assert merge(public_members, results).last_updated == ago(30)


def test_merge_last_updated_is_none_when_nothing_was_fetched():
    public_members = [make_member(1, "alice", make_track("alice", fetched_at=ago(60)))]

    assert merge(public_members, {1: transient()}).last_updated is None


# -- order -------------------------------------------------------------------------------------------


def test_merge_orders_now_playing_first_then_newest_then_username():
    public_members = [
        make_member(1, "old"),
        make_member(2, "zed_playing"),
        make_member(3, "carried_new", make_track("carried_new", fetched_at=ago(30), played_at=ago(31))),
        make_member(4, "bob_tie"),
        make_member(5, "amy_playing", make_track("amy_playing", fetched_at=ago(60), now_playing=True)),
        make_member(6, "ann_tie"),
    ]
    results = {
        1: make_track("old", played_at=ago(3600)),
        2: make_track("zed_playing", now_playing=True),
        3: transient(),
        4: make_track("bob_tie", played_at=ago(600)),
        5: transient(),
        6: make_track("ann_tie", played_at=ago(600)),
    }

    merged = merge(public_members, results)

    expected = ["amy_playing", "zed_playing", "carried_new", "ann_tie", "bob_tie", "old"]
    assert [track.username for track in merged.tracks] == expected


# -- main's configuration handling ----------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Fail any Python socket connection attempt: main must stop before the network."""

    def refuse(self, address):
        raise AssertionError(f"unexpected network connection to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("LISTENS_ITEMS", "eight"),
        ("LISTENS_FRESH_SECONDS", "-1"),
        ("LISTENS_RATE", "nan"),
        ("LISTENS_DEADLINE_SECONDS", "1e9"),
        ("LISTENS_MEMCACHED", "host"),
        ("LISTENS_LASTFM_URL", "ftp://lastfm.test/"),
        ("LISTENS_KEY_PREFIX", "has space"),
    ],
)
def test_main_returns_2_without_touching_anything_when_a_variable_is_bad(tmp_path, no_network, variable, raw):
    database = tmp_path / "data" / "listens.sqlite3"
    environ = {"LASTFM_API_KEY": "k", "LISTENS_LASTFM_URL": FAKE_URL, "LISTENS_DATABASE": str(database), variable: raw}

    assert module.main(environ) == module.EXIT_CONFIG == 2
    assert not database.exists()
    assert not database.parent.exists()


def test_main_logs_the_bad_variable(tmp_path, no_network, caplog):
    environ = {"LASTFM_API_KEY": "k", "LISTENS_DATABASE": str(tmp_path / "listens.sqlite3"), "LISTENS_ITEMS": "eight"}

    with caplog.at_level(logging.ERROR, logger="app.warm"):
        module.main(environ)

    assert [record.levelno for record in caplog.records] == [logging.ERROR]
    assert "LISTENS_ITEMS" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    "environ",
    [
        pytest.param({}, id="url-default"),
        pytest.param({"LISTENS_LASTFM_URL": "https://ws.audioscrobbler.com/2.0/"}, id="url-explicit"),
        pytest.param({"LASTFM_API_KEY": "   "}, id="key-blank"),
    ],
)
def test_main_returns_2_without_touching_anything_when_real_lastfm_has_no_key(tmp_path, no_network, environ):
    database = tmp_path / "data" / "listens.sqlite3"

    assert module.main({**environ, "LISTENS_DATABASE": str(database)}) == 2
    assert not database.parent.exists()


def test_main_logs_the_missing_key(tmp_path, no_network, caplog):
    with caplog.at_level(logging.ERROR, logger="app.warm"):
        module.main({"LISTENS_DATABASE": str(tmp_path / "listens.sqlite3")})

    assert "LASTFM_API_KEY" in caplog.text

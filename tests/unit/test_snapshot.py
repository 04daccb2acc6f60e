"""The version-2 snapshot: encoding, validation, keys, sorting and untrusted text and URLs."""

from __future__ import annotations

import copy
import json
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest

from app.core import snapshot as module
from app.core.snapshot import MAX_TEXT_CHARS
from app.core.snapshot import Pointer
from app.core.snapshot import Snapshot
from app.core.snapshot import SnapshotInvalidError
from app.core.snapshot import Track
from tests.support.clock import START
from tests.support.tracks import make_track

GENERATION = 1767323100000000
NOW = START


def make_snapshot(*tracks: Track, generation: int = GENERATION) -> Snapshot:
    stats = {"members": len(tracks), "fetchSeconds": 0.25}
    return Snapshot(generation=generation, last_updated=NOW, tracks=tracks, stats=stats)


def valid_payload() -> dict:
    played = make_track("alice", played_at=NOW - timedelta(minutes=3))
    playing = make_track("bob", now_playing=True)
    return json.loads(module.encode_snapshot(make_snapshot(playing, played)))


def encoded(payload: object) -> bytes:
    return json.dumps(payload).encode("utf-8")


# -- encode and decode ------------------------------------------------------------------


def test_encode_snapshot_bytes_are_canonical():
    played_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    snapshot = make_snapshot(make_track("alice", lastfm_username="rj", played_at=played_at))
    expected = (
        '{"generation":1767323100000000,"lastUpdated":"2026-01-02T03:05:00Z",'
        '"stats":{"fetchSeconds":0.25,"members":1},'
        '"tracks":[{"album":"Homogenic","artist":"Björk","fetchedAt":"2026-01-02T03:05:00Z",'
        '"image":"https://lastfm.freetls.fastly.net/i/u/300x300/a.png","lastfmUsername":"rj",'
        '"nowPlaying":false,"playedAt":"2026-01-02T03:04:05Z","track":"Jóga",'
        '"url":"https://www.last.fm/music/Bj%C3%B6rk/_/J%C3%B3ga","username":"alice"}],"version":2}'
    ).encode()

    assert module.encode_snapshot(snapshot) == expected


def test_encode_snapshot_is_stable_across_calls():
    snapshot = make_snapshot(make_track("alice", now_playing=True), make_track("bob", played_at=NOW))

    assert module.encode_snapshot(snapshot) == module.encode_snapshot(copy.deepcopy(snapshot))


@pytest.mark.parametrize(
    "tracks",
    [
        (),
        (make_track("alice", played_at=NOW - timedelta(hours=2)),),
        (make_track("alice", now_playing=True, played_at=None),),
        (make_track("alice", now_playing=True), make_track("bob", played_at=NOW - timedelta(seconds=1))),
        (make_track("zoë", artist="Sigur Rós", album="", track="Hoppípolla", image="", played_at=NOW),),
    ],
)
def test_decode_snapshot_round_trips_encode(tracks):
    snapshot = make_snapshot(*tracks)

    assert module.decode_snapshot(module.encode_snapshot(snapshot), GENERATION) == snapshot


def test_decode_snapshot_accepts_str():
    snapshot = make_snapshot(make_track("alice", now_playing=True))

    assert module.decode_snapshot(module.encode_snapshot(snapshot).decode("utf-8"), GENERATION) == snapshot


def test_decode_snapshot_returns_aware_utc_times():
    decoded = module.decode_snapshot(encoded(valid_payload()), GENERATION)

    assert decoded.last_updated.tzinfo is not None
    assert decoded.last_updated.utcoffset() == timedelta(0)


def test_decode_snapshot_converts_other_zones_to_utc():
    payload = valid_payload()
    payload["lastUpdated"] = "2026-01-02T04:05:00+01:00"

    assert module.decode_snapshot(encoded(payload), GENERATION).last_updated == NOW


# -- decode rejects -------------------------------------------------------------------------


def mutated(change) -> bytes:
    payload = valid_payload()
    change(payload)
    return encoded(payload)


def set_field(field, value):
    return lambda payload: payload.__setitem__(field, value)


def del_field(field):
    return lambda payload: payload.pop(field)


def set_track_field(field, value, index=0):
    return lambda payload: payload["tracks"][index].__setitem__(field, value)


def del_track_field(field, index=0):
    return lambda payload: payload["tracks"][index].pop(field)


TRACK_FIELDS = ("username", "lastfmUsername", "artist", "album", "track", "url", "image", "nowPlaying", "fetchedAt")

INVALID_SNAPSHOTS = [
    pytest.param(b"not json", "JSON", id="not-json"),
    pytest.param(b"", "JSON", id="empty-bytes"),
    pytest.param(b'{"version": 2, "generation": ', "JSON", id="truncated"),
    pytest.param(b"[]", "object", id="json-array"),
    pytest.param(b'"snapshot"', "object", id="json-string"),
    pytest.param(b"null", "object", id="json-null"),
    pytest.param(mutated(set_field("version", 1)), "version", id="version-1"),
    pytest.param(mutated(set_field("version", "2")), "version", id="version-string"),
    pytest.param(mutated(set_field("version", 2.0)), "version", id="version-float"),
    pytest.param(mutated(set_field("version", True)), "version", id="version-bool"),
    pytest.param(mutated(del_field("version")), "version", id="version-missing"),
    pytest.param(mutated(set_field("generation", GENERATION + 1)), "generation", id="generation-mismatch"),
    pytest.param(mutated(set_field("generation", str(GENERATION))), "generation", id="generation-string"),
    pytest.param(mutated(set_field("generation", True)), "generation", id="generation-bool"),
    pytest.param(mutated(set_field("generation", float(GENERATION))), "generation", id="generation-float"),
    pytest.param(mutated(del_field("generation")), "generation", id="generation-missing"),
    pytest.param(mutated(set_field("tracks", {})), "tracks", id="tracks-object"),
    pytest.param(mutated(set_field("tracks", None)), "tracks", id="tracks-null"),
    pytest.param(mutated(set_field("tracks", "[]")), "tracks", id="tracks-string"),
    pytest.param(mutated(del_field("tracks")), "tracks", id="tracks-missing"),
    pytest.param(mutated(lambda payload: payload["tracks"].append("alice")), "tracks[2]", id="track-not-object"),
    *[
        pytest.param(mutated(del_track_field(field)), f"tracks[0].{field}", id=f"track-missing-{field}")
        for field in TRACK_FIELDS
    ],
    pytest.param(mutated(set_track_field("nowPlaying", "true")), "nowPlaying", id="nowPlaying-string"),
    pytest.param(mutated(set_track_field("nowPlaying", 1)), "nowPlaying", id="nowPlaying-int"),
    pytest.param(mutated(set_track_field("playedAt", 12345, index=1)), "playedAt", id="playedAt-int"),
    pytest.param(mutated(set_track_field("artist", None)), "artist", id="artist-null"),
    pytest.param(mutated(set_track_field("track", 7)), "track", id="track-int"),
    pytest.param(mutated(set_track_field("url", ["https://www.last.fm/"])), "url", id="url-list"),
    pytest.param(mutated(set_track_field("username", "")), "username", id="username-empty"),
    pytest.param(mutated(set_track_field("lastfmUsername", "")), "username", id="lastfmUsername-empty"),
    pytest.param(mutated(set_track_field("playedAt", None, index=1)), "neither", id="not-playing-and-no-playedAt"),
    pytest.param(mutated(set_field("lastUpdated", "yesterday")), "lastUpdated", id="lastUpdated-words"),
    pytest.param(mutated(set_field("lastUpdated", "2026-13-01T00:00:00Z")), "lastUpdated", id="lastUpdated-month-13"),
    pytest.param(mutated(set_field("lastUpdated", "2026-01-02T03:05:00")), "lastUpdated", id="lastUpdated-naive"),
    pytest.param(mutated(set_field("lastUpdated", "")), "lastUpdated", id="lastUpdated-empty"),
    pytest.param(mutated(set_field("lastUpdated", 1767323100)), "lastUpdated", id="lastUpdated-int"),
    pytest.param(mutated(set_field("lastUpdated", None)), "lastUpdated", id="lastUpdated-null"),
    pytest.param(
        mutated(set_field("lastUpdated", "2026-01-02T03:05:00Z" + " " * 40)), "lastUpdated", id="lastUpdated-long"
    ),
    pytest.param(mutated(del_field("lastUpdated")), "lastUpdated", id="lastUpdated-missing"),
    pytest.param(mutated(set_track_field("fetchedAt", "2026-01-02 25:00:00Z")), "fetchedAt", id="fetchedAt-hour-25"),
    pytest.param(mutated(set_track_field("playedAt", "12345", index=1)), "playedAt", id="playedAt-digits"),
    pytest.param(mutated(set_field("stats", {"members": "2"})), "stats", id="stats-string-value"),
    pytest.param(mutated(set_field("stats", {"members": None})), "stats", id="stats-null-value"),
    pytest.param(mutated(set_field("stats", [1, 2])), "stats", id="stats-list"),
    pytest.param(mutated(set_field("stats", "1")), "stats", id="stats-string"),
    pytest.param(json.dumps(valid_payload(), ensure_ascii=False).encode("latin-1"), "JSON", id="latin-1"),
    pytest.param(b'{"version": 2, "artist": "\xff\xfe\xfd"}', "JSON", id="invalid-utf-8"),
]


@pytest.mark.parametrize(("raw", "reason"), INVALID_SNAPSHOTS)
def test_decode_snapshot_rejects_invalid_value(raw, reason):
    with pytest.raises(SnapshotInvalidError) as caught:
        module.decode_snapshot(raw, GENERATION)

    assert reason in str(caught.value)


@pytest.mark.parametrize("raw", [None, 12, ["a"]])
def test_decode_snapshot_rejects_non_bytes(raw):
    with pytest.raises(SnapshotInvalidError, match="not bytes"):
        module.decode_snapshot(raw, GENERATION)


def test_decode_snapshot_reason_is_one_short_line():
    raw = mutated(set_track_field("artist", None))

    with pytest.raises(SnapshotInvalidError) as caught:
        module.decode_snapshot(raw, GENERATION)

    assert str(caught.value) == "tracks[0].artist is not a string"


def test_decode_snapshot_reason_names_both_generations_when_they_differ():
    with pytest.raises(SnapshotInvalidError) as caught:
        module.decode_snapshot(encoded(valid_payload()), GENERATION + 1)

    assert str(GENERATION) in str(caught.value)
    assert str(GENERATION + 1) in str(caught.value)


def test_decode_snapshot_accepts_missing_stats():
    payload = valid_payload()
    del payload["stats"]

    assert module.decode_snapshot(encoded(payload), GENERATION).stats == {}


# -- the pointer ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"generation": 5, "previous": null}', Pointer(5, None)),
        (b'{"generation": 5, "previous": 4}', Pointer(5, 4)),
        (b'{"generation": 1767323100000000, "previous": 1767322800000000}', Pointer(GENERATION, 1767322800000000)),
        (b'{"generation": 5}', Pointer(5, None)),
        ('{"generation": 7, "previous": 1}', Pointer(7, 1)),
    ],
)
def test_decode_pointer_accepts_valid_value(raw, expected):
    assert module.decode_pointer(raw) == expected


@pytest.mark.parametrize("pointer", [Pointer(5, None), Pointer(1767323100000000, 1767322800000000)])
def test_decode_pointer_round_trips_encode(pointer):
    assert module.decode_pointer(module.encode_pointer(pointer)) == pointer


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"five", id="not-json"),
        pytest.param(b"[5, 4]", id="array"),
        pytest.param(b"5", id="number"),
        pytest.param(b"{}", id="generation-missing"),
        pytest.param(b'{"generation": 0, "previous": null}', id="generation-zero"),
        pytest.param(b'{"generation": -5, "previous": null}', id="generation-negative"),
        pytest.param(b'{"generation": "5", "previous": null}', id="generation-string"),
        pytest.param(b'{"generation": true, "previous": null}', id="generation-bool"),
        pytest.param(b'{"generation": 5.0, "previous": null}', id="generation-float"),
        pytest.param(b'{"generation": 5, "previous": 5}', id="previous-equal"),
        pytest.param(b'{"generation": 5, "previous": 6}', id="previous-newer"),
        pytest.param(b'{"generation": 5, "previous": 0}', id="previous-zero"),
        pytest.param(b'{"generation": 5, "previous": "4"}', id="previous-string"),
        pytest.param(b'{"generation": 5, "previous": true}', id="previous-bool"),
        pytest.param(b'{"generation": 5, "previous": 4.0}', id="previous-float"),
        pytest.param(b'{"generation": 5, "previous": "\xff"}', id="invalid-utf-8"),
        pytest.param(None, id="none"),
    ],
)
def test_decode_pointer_rejects_invalid_value(raw):
    with pytest.raises(SnapshotInvalidError, match="pointer"):
        module.decode_pointer(raw)


# -- keys --------------------------------------------------------------------------------


def test_pointer_key_is_versioned():
    assert module.pointer_key("user-listens") == "user-listens:v2:current"


def test_snapshot_key_is_versioned_by_generation():
    assert module.snapshot_key("user-listens", GENERATION) == f"user-listens:v2:snap:{GENERATION}"


def test_legacy_keys_are_the_old_systems_keys():
    assert module.legacy_keys("user-listens") == ("user-listens:recent", "user-listens:v2:recent")


@pytest.mark.parametrize("prefix", ["site-a", "prod_v.1"])
def test_keys_use_the_prefix(prefix):
    keys = [
        module.pointer_key(prefix),
        module.snapshot_key(prefix, 1),
        module.lease_key(prefix),
        *module.legacy_keys(prefix),
    ]

    assert all(key.startswith(f"{prefix}:") for key in keys)


def test_snapshot_key_never_equals_a_legacy_key():
    legacy = set(module.legacy_keys("user-listens"))

    assert module.pointer_key("user-listens") not in legacy
    assert module.snapshot_key("user-listens", GENERATION) not in legacy


def test_generation_from_is_microseconds_since_the_epoch():
    assert module.generation_from(datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=UTC)) == 1_000_005


# -- sort_tracks -------------------------------------------------------------------------

T0 = NOW - timedelta(hours=1)


@pytest.mark.parametrize(
    ("tracks", "expected_order"),
    [
        pytest.param(
            [make_track("old", played_at=T0), make_track("playing", now_playing=True)],
            ["playing", "old"],
            id="now-playing-first",
        ),
        pytest.param(
            [
                make_track("early", played_at=T0),
                make_track("late", played_at=T0 + timedelta(minutes=5)),
                make_track("middle", played_at=T0 + timedelta(minutes=2)),
            ],
            ["late", "middle", "early"],
            id="playedAt-descending",
        ),
        pytest.param(
            [make_track("carol", played_at=T0), make_track("alice", played_at=T0), make_track("bob", played_at=T0)],
            ["alice", "bob", "carol"],
            id="ties-by-username",
        ),
        pytest.param(
            [make_track("bob", played_at=T0), make_track("Alice", played_at=T0), make_track("carol", played_at=T0)],
            ["Alice", "bob", "carol"],
            id="ties-by-username-ignoring-case",
        ),
        pytest.param(
            [make_track("zed", now_playing=True), make_track("amy", now_playing=True)],
            ["amy", "zed"],
            id="now-playing-ties-by-username",
        ),
        pytest.param(
            [
                make_track("recent", played_at=NOW),
                make_track("zoe", now_playing=True),
                make_track("ann", played_at=T0),
                make_track("abe", now_playing=True),
            ],
            ["abe", "zoe", "recent", "ann"],
            id="mixed",
        ),
        pytest.param(
            [
                make_track("utc", played_at=T0),
                make_track("paris", played_at=(T0 + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=1)))),
            ],
            ["paris", "utc"],
            id="compares-instants-across-zones",
        ),
    ],
)
def test_sort_tracks_orders(tracks, expected_order):
    assert [track.username for track in module.sort_tracks(tracks)] == expected_order


def test_sort_tracks_does_not_change_its_input():
    tracks = [make_track("b", played_at=T0), make_track("a", now_playing=True)]

    module.sort_tracks(tracks)

    assert [track.username for track in tracks] == ["b", "a"]


# -- clean_text --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Radiohead", "Radiohead"),
        ("  padded  ", "padded"),
        ("bell\x07and\x00null", "bellandnull"),
        ("escape\x1b[31mred", "escape[31mred"),
        ("delete\x7fchar", "deletechar"),
        ("Evil\u202egnp.exe", "Evilgnp.exe"),
        ("\u202aembedded\u202c", "embedded"),
        ("\u202bright\u202dleft", "rightleft"),
        ("\u2066isolate\u2067d\u2068x\u2069", "isolatedx"),
        ("Sigur Rós — Hoppípolla", "Sigur Rós — Hoppípolla"),
        ("日本語のタイトル", "日本語のタイトル"),
    ],
)
def test_clean_text_removes_control_and_direction_characters(raw, expected):
    assert module.clean_text(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "first\nsecond",
        "first\r\nsecond",
        "first\rsecond",
        "first\n\n\nsecond",
        "first\x0bsecond",
        "first\x0csecond",
        "first\x1csecond",
        "first\x85second",
        "first\u2028second",
        "first\u2029second",
    ],
)
def test_clean_text_returns_a_single_line(raw):
    text = module.clean_text(raw)

    assert len(text.splitlines()) == 1
    assert "first" in text and "second" in text


def test_clean_text_keeps_words_apart_when_collapsing_newlines():
    assert module.clean_text("first\nsecond").split() == ["first", "second"]


def test_clean_text_truncates_a_10_kb_name():
    text = module.clean_text("x" * 10_240)

    assert len(text) == MAX_TEXT_CHARS
    assert text.endswith("…")


def test_clean_text_keeps_text_at_the_limit():
    assert module.clean_text("y" * MAX_TEXT_CHARS) == "y" * MAX_TEXT_CHARS


def test_clean_text_truncates_to_a_custom_limit():
    assert len(module.clean_text("z" * 500, 160)) == 160


@pytest.mark.parametrize("value", [None, 42, ["a"], {"#text": "a"}, b"bytes"])
def test_clean_text_returns_empty_for_non_strings(value):
    assert module.clean_text(value) == ""


# -- safe URLs -----------------------------------------------------------------------------

HOSTILE_URLS = [
    "javascript:alert(1)",
    "JAVASCRIPT:alert(1)",
    "JaVaScRiPt:alert(document.cookie)",
    " javascript:alert(1)",
    "java\tscript:alert(1)",
    "java\nscript:alert(1)",
    "javascript://www.last.fm/%0aalert(1)",
    "data:text/html,<script>alert(1)</script>",
    "data:image/png;base64,iVBORw0KGgo=",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
    "ftp://www.last.fm/",
    "//evil.com/x.png",
    "//www.last.fm/music/x",
    "/music/x",
    "music/x",
    "https://evil.com/",
    "https://evil.com/music/x",
    "https://www.last.fm.evil.com/",
    "https://lastfm.freetls.fastly.net.evil.com/x.png",
    "https://evil.com/?https://www.last.fm",
    "https://evil.com/#https://www.last.fm",
    "https://evil.com/www.last.fm/",
    "https://www.last.fm@evil.com/",
    "https://user:pass@www.last.fm/",
    "https://user@www.last.fm/",
    "https://www.last.fm:8080/",
    "https://www.last.fm:99999/",
    "https://www.last.fm:port/",
    "https://www.last.fm /music/x",
    "https://www.last.fm/music/x y",
    "https://www.last.fm/\nmusic",
    "https://www.last.fm/music\r\n/x",
    "https://www.last.fm/\u202emusic",
    "https://www.last.fm\x00.evil.com/",
    "https:\\\\evil.com\\x",
    "https:/www.last.fm/music",
    "https://www.lаst.fm/",  # Cyrillic а
    "https://www.last.fm./",
    "https://" + "a" * 2000 + ".last.fm/",
    "https://www.last.fm/" + "a" * 2000,
    "https://lastfm.freetls.fastly.net/" + "a" * 2000,
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "",
]


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_safe_page_url_rejects_hostile_url(url):
    assert module.safe_page_url(url) == ""


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_safe_image_url_rejects_hostile_url(url):
    assert module.safe_image_url(url) == ""


@pytest.mark.parametrize("value", [None, 42, ["https://www.last.fm/"], b"https://www.last.fm/"])
def test_safe_urls_reject_non_strings(value):
    assert (module.safe_page_url(value), module.safe_image_url(value)) == ("", "")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://www.last.fm/music/Bj%C3%B6rk/_/J%C3%B3ga", "https://www.last.fm/music/Bj%C3%B6rk/_/J%C3%B3ga"),
        ("http://www.last.fm/music/Cher/_/Believe", "https://www.last.fm/music/Cher/_/Believe"),
        ("HTTPS://WWW.LAST.FM/music/x", "https://www.last.fm/music/x"),
        ("https://last.fm/user/rj", "https://last.fm/user/rj"),
        ("https://m.last.fm/user/rj", "https://m.last.fm/user/rj"),
        ("https://www.last.fm:443/music/x", "https://www.last.fm/music/x"),
        ("http://www.last.fm:80/music/x", "https://www.last.fm/music/x"),
        ("https://www.last.fm", "https://www.last.fm/"),
        ("https://www.last.fm/music/x?from=1#top", "https://www.last.fm/music/x?from=1#top"),
    ],
)
def test_safe_page_url_keeps_lastfm_pages_as_https(url, expected):
    assert module.safe_page_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://lastfm.freetls.fastly.net/i/u/300x300/a.png",
        "https://lastfm-img2.akamaized.net/i/u/a.png",
    ],
)
def test_safe_page_url_rejects_image_hosts(url):
    assert module.safe_page_url(url) == ""


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://lastfm.freetls.fastly.net/i/u/300x300/a.png", "https://lastfm.freetls.fastly.net/i/u/300x300/a.png"),
        ("http://lastfm.freetls.fastly.net/i/u/300x300/a.png", "https://lastfm.freetls.fastly.net/i/u/300x300/a.png"),
        ("https://lastfm-img2.akamaized.net/i/u/a.png", "https://lastfm-img2.akamaized.net/i/u/a.png"),
        ("https://userserve-ak.last.fm/serve/64/1.jpg", "https://userserve-ak.last.fm/serve/64/1.jpg"),
        ("https://img.lastfm.com/a.jpg", "https://img.lastfm.com/a.jpg"),
        ("HTTPS://LASTFM.FREETLS.FASTLY.NET/a.png", "https://lastfm.freetls.fastly.net/a.png"),
    ],
)
def test_safe_image_url_keeps_lastfm_images_as_https(url, expected):
    assert module.safe_image_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://evillast.fm/a.png",
        "https://notlastfm.com/a.png",
        "https://fastly.net/a.png",
        "https://x.lastfm.freetls.fastly.net/a.png",
        "https://last.fm.evil.com/a.png",
    ],
)
def test_safe_image_url_rejects_lookalike_hosts(url):
    assert module.safe_image_url(url) == ""


# -- profile_url ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lastfm_username", "expected"),
    [("rj", "https://www.last.fm/user/rj"), ("a/b?c", "https://www.last.fm/user/a%2Fb%3Fc")],
)
def test_profile_url_quotes_the_username(lastfm_username, expected):
    assert module.profile_url(lastfm_username) == expected

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import traceback
from datetime import UTC
from datetime import datetime
from pathlib import Path

import pytest
import requests
import responses
from responses import matchers

from app.core import snapshot
from app.warm import lastfm
from app.warm import throttle
from tests.support.clock import FakeClock

BASE_URL = "https://lastfm.test/2.0/"
API_KEY = "SECRETKEY5f1e2d3c4b5a69788796a5b4"
NOW = datetime(2024, 4, 3, 9, 10, tzinfo=UTC)
DATA = Path(__file__).resolve().parents[1] / "data" / "lastfm"
HTML_PAGE = b"<!DOCTYPE html><html><head><title>Last.fm is down for maintenance</title></head><body></body></html>"


RECORDED = DATA / "recorded"


def recorded_fixtures_folder() -> Path:
    """Return the folder of real recorded responses (tests/data/lastfm/recorded, sources in its SOURCES.md)."""
    return RECORDED


def recorded(name: str) -> bytes:
    return (recorded_fixtures_folder() / f"{name}.json").read_bytes()


def payload(name: str) -> bytes:
    return (DATA / name).read_bytes()


def payload_json(name: str) -> dict:
    return json.loads(payload(name))


class RecordingRateLimiter(throttle.RateLimiter):
    """A real rate limiter that also remembers every pause asked of it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pauses: list[float] = []

    def pause_until(self, moment: float) -> None:
        self.pauses.append(moment)
        super().pause_until(moment)


def make_client(clock: FakeClock, api_key: str | None = API_KEY, **options) -> lastfm.LastfmClient:
    return lastfm.LastfmClient(
        requests.Session(), BASE_URL, api_key, clock=clock.monotonic, sleep=clock.sleep, **options
    )


def expected_params(user: str, api_key: str | None = API_KEY) -> dict[str, str]:
    params = {"method": "user.getrecenttracks", "user": user, "limit": "1", "format": "json"}
    if api_key is not None:
        params["api_key"] = api_key
    return params


def serve(mocked, user: str, body, status: int = 200, headers: dict | None = None, api_key: str | None = API_KEY):
    """Register one GET answer for user's exact query string."""
    return mocked.add(
        responses.GET,
        BASE_URL,
        body=body,
        status=status,
        headers=headers,
        content_type="application/json",
        match=[matchers.query_param_matcher(expected_params(user, api_key))],
    )


def fails_once(clock, mocked, error=lastfm.LastfmTransientError, match=None, client=None) -> lastfm.LastfmError:
    """Fetch quirky's track: expect error (matching match) after one request and no pause, and return it."""
    client = client if client is not None else make_client(clock)
    with pytest.raises(error, match=match) as caught:
        client.fetch_recent_track("member", "quirky", now=NOW)
    assert len(mocked.calls) == 1
    assert clock.sleeps == []
    return caught.value


def utc(uts: int) -> datetime:
    return datetime.fromtimestamp(uts, tz=UTC)


# -- the recorded responses ------------------------------------------------------

# Two recordings (2016) show the same track, once now playing, once played.
THE_LAST_SLED = {
    "artist": "Tuomas Holopainen",
    "track": "The Last Sled",
    "album": "Music Inspired by the Life and Times of Scrooge",
    "url": "https://www.last.fm/music/Tuomas+Holopainen/_/The+Last+Sled",
    # The largest image, as far as snapshot.safe_image_url accepts its host (img2-ak.lst.fm).
    "image": snapshot.safe_image_url("http://img2-ak.lst.fm/i/u/300x300/b3efb95e128e427cc25bbf9d97e9f57c.png"),
}

RECORDED_TRACKS = {
    "recent_multi_2014_trimmed": (
        "RJ",
        {
            "artist": "Santana",
            "track": "No One to Depend On",
            "album": "Santana (III)",
            "url": "https://www.last.fm/music/Santana/_/No+One+to+Depend+On",
            "image": "https://userserve-ak.last.fm/serve/300x300/99461493.jpg",
            "played_at": utc(1419006075),
            "now_playing": False,
        },
    ),
    "recent_single_object_2014": (
        "RJ",
        {
            "artist": "Rick James",
            "track": "Super Freak (Part 1) - 1981 Single Version",
            "album": "The Definitive Collection",
            "url": "https://www.last.fm/music/Rick+James/_/Super+Freak+(Part+1)+-+1981+Single+Version",
            "image": "https://userserve-ak.last.fm/serve/300x300/90462319.jpg",
            "played_at": utc(1419070612),
            "now_playing": False,
        },
    ),
    "recent_empty_legacy_2014": ("RT", None),
    "recent_extended_single_object_2018": (
        "anyone",
        {
            "artist": "Republika",
            "track": "Tak Dlugo Czekam (Cialo) (live)",
            "album": "Koncerty w Trojce - Republika",
            "url": "https://www.last.fm/music/Republika/_/Tak+D%C5%82ugo+Czekam+(Cia%C5%82o)+(live)",
            "image": "https://lastfm-img2.akamaized.net/i/u/300x300/1756f85e7332d469dd17b2e1e0a4d16c.png",
            "played_at": utc(1530117136),
            "now_playing": False,
        },
    ),
    "nowplaying_limit1_two_tracks_2016": ("drwahl", THE_LAST_SLED | {"played_at": None, "now_playing": True}),
    "recent_limit1_not_playing_2016": ("drwahl", THE_LAST_SLED | {"played_at": utc(1458169072), "now_playing": False}),
    "nowplaying_empty_images_limit3_2018": (
        "anorakhighst",
        {
            "artist": "The Fatal Englishman",
            "track": "Into violet",
            "album": "Mind at the End of Its Tether",
            "url": "https://www.last.fm/music/The+Fatal+Englishman/_/Into+violet",
            "image": "",
            "played_at": None,
            "now_playing": True,
        },
    ),
    "recent_nonascii_excerpt_2017": (
        "Barryvanveen",
        {
            "artist": "Dawn of Midi",
            "track": "Algol",
            "album": "Dysnomia",
            "url": "https://www.last.fm/music/Dawn+of+Midi/_/Algol",
            "image": "https://lastfm-img2.akamaized.net/i/u/300x300/33d79fdf33d14cc59df1148eb61e636a.png",
            "played_at": None,
            "now_playing": True,
        },
    ),
    "recent_limit1_empty_images_2024": (
        "FaziBear",
        {
            "artist": "The Ultimate System",
            "track": "Overview",
            "album": "",
            "url": "https://www.last.fm/music/The+Ultimate+System/_/Overview",
            "image": "",
            "played_at": utc(1712135044),
            "now_playing": False,
        },
    ),
    "nowplaying_extended_artist_star_2020": (
        "frikandel_",
        {
            "artist": "Tame Impala",
            "track": "Apocalypse Dreams",
            "album": "Lonerism",
            "url": "https://www.last.fm/music/Tame+Impala/_/Apocalypse+Dreams",
            "image": "https://lastfm.freetls.fastly.net/i/u/300x300/7c9c4d1009514b178c82f2201e3a1fce.jpg",
            "played_at": None,
            "now_playing": True,
        },
    ),
}

# SOURCES.md records no HTTP status for the 2014 error; the API of that time answered errors with 200.
RECORDED_ERRORS = {
    "error_6_no_user_2014": ("ghost", 200, "not_found", 6),
    "error_6_user_not_found_404_2020": ("ghost", 404, "not_found", 6),
    "error_17_private_403_2020": ("hermit", 403, "private", 17),
}


def test_recorded_fixtures_each_have_an_expected_outcome():
    names = {path.stem for path in recorded_fixtures_folder().glob("*.json")}

    assert names == set(RECORDED_TRACKS) | set(RECORDED_ERRORS)


@pytest.mark.parametrize("name", sorted(RECORDED_TRACKS))
def test_fetch_recent_track_parses_recorded_response(name, clock, mocked):
    lastfm_username, expected = RECORDED_TRACKS[name]
    serve(mocked, lastfm_username, recorded(name))

    track = make_client(clock).fetch_recent_track("member", lastfm_username, now=NOW)

    if expected is None:
        assert track is None
    else:
        assert track == snapshot.Track(username="member", lastfm_username=lastfm_username, fetched_at=NOW, **expected)


@pytest.mark.parametrize("name", sorted(RECORDED_ERRORS))
def test_fetch_recent_track_raises_permanent_for_recorded_error(name, clock, mocked):
    lastfm_username, status, reason, code = RECORDED_ERRORS[name]
    serve(mocked, lastfm_username, recorded(name), status=status)

    with pytest.raises(lastfm.LastfmPermanentError) as caught:
        make_client(clock).fetch_recent_track("member", lastfm_username, now=NOW)

    assert caught.value.reason == reason
    assert caught.value.status == status
    assert caught.value.code == code
    assert len(mocked.calls) == 1
    assert clock.sleeps == []


def test_fetch_recent_track_names_member_status_and_lastfm_message_in_errors(clock, mocked):
    serve(mocked, "hermit", recorded("error_17_private_403_2020"), status=403)

    with pytest.raises(lastfm.LastfmPermanentError) as caught:
        make_client(clock).fetch_recent_track("member", "hermit", now=NOW)

    message = str(caught.value)
    assert "'hermit'" in message
    assert "HTTP 403" in message
    assert "error 17" in message
    assert "Login: User required to be logged in" in message


def test_fetch_recent_track_keeps_danish_names_intact(clock, mocked):
    body = json.loads(recorded("recent_nonascii_excerpt_2017"))
    del body["recenttracks"]["track"][0]
    serve(mocked, "Barryvanveen", json.dumps(body, ensure_ascii=False).encode("utf-8"))

    track = make_client(clock).fetch_recent_track("member", "Barryvanveen", now=NOW)

    assert (track.artist, track.track, track.album) == ("Beaten to Death", "Døv, Døvere, Død", "Dødsfest!")
    assert track.url == "https://www.last.fm/music/Beaten+to+Death/_/D%C3%B8v,+D%C3%B8vere,+D%C3%B8d"
    assert track.played_at == utc(1489250636)


def test_fetch_recent_track_ignores_placeholder_star_when_falling_back_to_artist_image(clock, mocked):
    body = json.loads(recorded("nowplaying_extended_artist_star_2020"))
    for item in body["recenttracks"]["track"]:
        item["image"] = []
    serve(mocked, "frikandel_", json.dumps(body))

    track = make_client(clock).fetch_recent_track("member", "frikandel_", now=NOW)

    assert track.image == ""


@pytest.mark.parametrize("asked_as", ["rj", "RJ", "Rj"])
def test_fetch_recent_track_compares_user_case_insensitively(asked_as, clock, mocked):
    serve(mocked, asked_as, recorded("recent_single_object_2014"))

    track = make_client(clock).fetch_recent_track("member", asked_as, now=NOW)

    assert track.artist == "Rick James"
    assert track.lastfm_username == asked_as


# -- hand-written quirks ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "field", "expected"),
    [
        ("recent_single_valid.json", "track", "Quiet Song"),
        ("nowplaying_second_in_list.json", "track", "Playing Song"),
        (
            "images_largest_non_empty.json",
            "image",
            "https://lastfm.freetls.fastly.net/i/u/174s/large00000000000000000000000000.png",
        ),
        (
            "images_only_unsized.json",
            "image",
            "https://lastfm.freetls.fastly.net/i/u/unsized000000000000000000000000.png",
        ),
        ("http_urls.json", "url", "https://www.last.fm/music/Some+Band/_/Quiet+Song"),
        (
            "http_urls.json",
            "image",
            "https://lastfm.freetls.fastly.net/i/u/300x300/0123456789abcdef0123456789abcdef.png",
        ),
        ("javascript_urls.json", "url", ""),
        ("javascript_urls.json", "image", ""),
        ("foreign_host_urls.json", "url", ""),
        ("foreign_host_urls.json", "image", ""),
        (
            "extended_artist_image_fallback.json",
            "image",
            "https://lastfm.freetls.fastly.net/i/u/300x300/feedfacefeedfacefeedfacefeedface.png",
        ),
        ("extended_artist_image_fallback.json", "artist", "Some Band"),
    ],
)
def test_fetch_recent_track_parses_quirk(name, field, expected, clock, mocked):
    serve(mocked, "quirky", payload(name))

    track = make_client(clock).fetch_recent_track("member", "quirky", now=NOW)

    assert getattr(track, field) == expected


def test_fetch_recent_track_prefers_now_playing_item_with_no_played_at(clock, mocked):
    serve(mocked, "quirky", payload("nowplaying_second_in_list.json"))

    track = make_client(clock).fetch_recent_track("member", "quirky", now=NOW)

    assert track.now_playing is True
    assert track.played_at is None


def test_fetch_recent_track_returns_none_when_track_list_is_empty(clock, mocked):
    serve(mocked, "quirky", payload("empty_track_list.json"))

    assert make_client(clock).fetch_recent_track("member", "quirky", now=NOW) is None


def test_fetch_recent_track_truncates_very_long_names(clock, mocked):
    body = payload_json("recent_single_valid.json")
    item = body["recenttracks"]["track"][0]
    item["name"] = "n" * 10_240
    item["artist"]["#text"] = "a" * 10_240
    item["album"]["#text"] = "b" * 10_240
    serve(mocked, "quirky", json.dumps(body))

    track = make_client(clock).fetch_recent_track("member", "quirky", now=NOW)

    for value in (track.track, track.artist, track.album):
        assert len(value) <= snapshot.MAX_TEXT_CHARS
        assert value.endswith("…")


@pytest.mark.parametrize(
    "name",
    [
        "wrong_user_page.json",
        "track_is_string.json",
        "artist_is_number.json",
        "artist_missing.json",
        "name_missing.json",
        "name_empty.json",
        "date_missing_not_playing.json",
        "date_uts_garbage.json",
        "image_not_a_list.json",
        "empty_track_list_counting_scrobbles.json",
    ],
)
def test_fetch_recent_track_raises_transient_without_retry_when_item_is_malformed(name, clock, mocked):
    serve(mocked, "quirky", payload(name))

    fails_once(clock, mocked)


def test_fetch_recent_track_names_the_other_user_when_page_is_for_someone_else(clock, mocked):
    serve(mocked, "quirky", payload("wrong_user_page.json"))

    with pytest.raises(lastfm.LastfmTransientError, match="somebody_else"):
        make_client(clock).fetch_recent_track("member", "quirky", now=NOW)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(HTML_PAGE, id="html"),
        pytest.param(payload("truncated_body.json"), id="truncated"),
        pytest.param(b"", id="empty"),
        pytest.param(b"[]", id="list"),
        pytest.param(b'"x"', id="string"),
        pytest.param(b"null", id="null"),
        pytest.param(b"\xff\xfe not utf-8", id="bad-bytes"),
        pytest.param(payload("recenttracks_is_list.json"), id="recenttracks-list"),
    ],
)
def test_fetch_recent_track_retries_then_raises_transient_when_body_is_not_a_page(body, clock, mocked):
    serve(mocked, "quirky", body)

    with pytest.raises(lastfm.LastfmTransientError):
        make_client(clock).fetch_recent_track("member", "quirky", now=NOW)

    assert len(mocked.calls) == 3
    assert clock.sleeps == [0.5, 1.0]


def test_fetch_recent_track_says_html_when_body_is_an_html_page(clock, mocked):
    serve(mocked, "quirky", HTML_PAGE)

    with pytest.raises(lastfm.LastfmTransientError, match="HTML"):
        make_client(clock, max_retries=0).fetch_recent_track("member", "quirky", now=NOW)


@pytest.mark.parametrize("with_length", [True, False])
def test_fetch_recent_track_raises_transient_when_body_is_over_the_limit(with_length, clock, mocked):
    mocked.add(
        responses.GET,
        BASE_URL,
        body=b" " * 2000 + payload("recent_single_valid.json"),
        auto_calculate_content_length=with_length,
        match=[matchers.query_param_matcher(expected_params("quirky"))],
    )

    fails_once(clock, mocked, match="over 1000 bytes", client=make_client(clock, max_body_bytes=1000))


# -- Last.fm error codes and HTTP statuses ----------------------------------------


@pytest.mark.parametrize("name", ["error_10_invalid_key.json", "error_26_suspended_key.json"])
@pytest.mark.parametrize("status", [200, 400, 403])
def test_fetch_recent_track_raises_fatal_when_api_key_is_refused(name, status, clock, mocked):
    serve(mocked, "quirky", payload(name), status=status)

    fails_once(clock, mocked, lastfm.LastfmFatalError)


@pytest.mark.parametrize(
    "name", ["error_8_operation_failed.json", "error_11_service_offline.json", "error_16_temporary.json"]
)
def test_fetch_recent_track_retries_then_raises_transient_for_temporary_error_codes(name, clock, mocked):
    serve(mocked, "quirky", payload(name))

    with pytest.raises(lastfm.LastfmTransientError) as caught:
        make_client(clock).fetch_recent_track("member", "quirky", now=NOW)

    assert caught.value.code == json.loads(payload(name))["error"]
    assert len(mocked.calls) == 3


def test_fetch_recent_track_raises_transient_without_retry_for_unknown_error_code(clock, mocked):
    serve(mocked, "quirky", payload("error_4_unknown_code.json"), status=400)

    assert fails_once(clock, mocked).code == 4


def test_fetch_recent_track_treats_error_6_on_a_5xx_as_transient(clock, mocked):
    serve(mocked, "ghost", recorded("error_6_user_not_found_404_2020"), status=502)

    with pytest.raises(lastfm.LastfmTransientError):
        make_client(clock, max_retries=0).fetch_recent_track("member", "ghost", now=NOW)


def test_fetch_recent_track_retries_after_rate_limit_error_and_pauses_every_worker(clock, mocked):
    serve(mocked, "quirky", payload("error_29_rate_limit.json"))
    serve(mocked, "quirky", payload("recent_single_valid.json"))
    limiter = RecordingRateLimiter(5, clock=clock.monotonic, sleep=clock.sleep)

    track = make_client(clock, throttle=limiter).fetch_recent_track("member", "quirky", now=NOW)

    assert track.track == "Quiet Song"
    assert clock.sleeps == [0.5]
    assert limiter.pauses == [pytest.approx(1000.5)]


def test_fetch_recent_track_pauses_every_worker_even_when_out_of_retries(clock, mocked):
    serve(mocked, "quirky", payload("error_29_rate_limit.json"), headers={"Retry-After": "20"})
    limiter = RecordingRateLimiter(5, clock=clock.monotonic, sleep=clock.sleep)

    with pytest.raises(lastfm.LastfmTransientError):
        make_client(clock, max_retries=0, throttle=limiter).fetch_recent_track("member", "quirky", now=NOW)

    assert limiter.pauses == [pytest.approx(1020.0)]
    assert clock.sleeps == []


def test_fetch_recent_track_retries_after_500_then_502(clock, mocked):
    serve(mocked, "quirky", b"Internal Server Error", status=500)
    serve(mocked, "quirky", HTML_PAGE, status=502)
    serve(mocked, "quirky", payload("recent_single_valid.json"))

    track = make_client(clock).fetch_recent_track("member", "quirky", now=NOW)

    assert track.track == "Quiet Song"
    assert clock.sleeps == [0.5, 1.0]


def test_fetch_recent_track_raises_transient_after_503_three_times(clock, mocked):
    serve(mocked, "quirky", b"Service Unavailable", status=503)

    with pytest.raises(lastfm.LastfmTransientError, match="HTTP 503") as caught:
        make_client(clock).fetch_recent_track("member", "quirky", now=NOW)

    assert caught.value.status == 503
    assert len(mocked.calls) == 3
    assert clock.sleeps == [0.5, 1.0]


@pytest.mark.parametrize(("header", "expected_sleep"), [("7", 7.0), ("3600", 60.0), ("0", 0.5)])
def test_fetch_recent_track_honours_retry_after_on_429(header, expected_sleep, clock, mocked):
    serve(mocked, "quirky", b"", status=429, headers={"Retry-After": header})
    serve(mocked, "quirky", payload("recent_single_valid.json"))
    limiter = RecordingRateLimiter(5, clock=clock.monotonic, sleep=clock.sleep)

    track = make_client(clock, throttle=limiter).fetch_recent_track("member", "quirky", now=NOW)

    assert track.track == "Quiet Song"
    assert clock.sleeps == [expected_sleep]
    assert limiter.pauses == [pytest.approx(1000.0 + expected_sleep)]


def test_fetch_recent_track_reports_retry_after_when_retries_run_out(clock, mocked):
    serve(mocked, "quirky", b"", status=503, headers={"Retry-After": "12"})

    with pytest.raises(lastfm.LastfmTransientError) as caught:
        make_client(clock, max_retries=1).fetch_recent_track("member", "quirky", now=NOW)

    assert caught.value.retry_after_s == 12.0
    assert clock.sleeps == [12.0]


@pytest.mark.parametrize("status", [301, 302, 404])
def test_fetch_recent_track_raises_transient_without_retry_for_other_statuses(status, clock, mocked):
    serve(mocked, "quirky", b"", status=status, headers={"Location": "https://elsewhere.test/"})

    fails_once(clock, mocked, match=f"HTTP {status}")


@pytest.mark.parametrize(
    "failure",
    [
        requests.ConnectionError("connection refused"),
        requests.ConnectTimeout("connect timed out"),
        requests.ReadTimeout("read timed out"),
    ],
)
def test_fetch_recent_track_retries_then_raises_transient_when_connection_fails(failure, clock, mocked):
    serve(mocked, "quirky", failure)

    with pytest.raises(lastfm.LastfmTransientError):
        make_client(clock).fetch_recent_track("member", "quirky", now=NOW)

    assert len(mocked.calls) == 3


# -- deadline ---------------------------------------------------------------------


def test_fetch_recent_track_raises_deadline_without_a_request_when_deadline_has_passed(clock, mocked):
    with pytest.raises(lastfm.LastfmTransientError, match="deadline"):
        make_client(clock).fetch_recent_track("member", "quirky", now=NOW, deadline=clock.monotonic() - 1)

    assert len(mocked.calls) == 0


def test_fetch_recent_track_caps_timeouts_at_the_time_left(clock, mocked):
    serve(mocked, "quirky", payload("recent_single_valid.json"))

    make_client(clock).fetch_recent_track("member", "quirky", now=NOW, deadline=clock.monotonic() + 2.0)

    request_options = mocked.calls[0].request.req_kwargs
    assert request_options["timeout"] == (pytest.approx(2.0), pytest.approx(2.0))
    assert request_options["stream"] is True


def test_fetch_recent_track_uses_configured_timeouts_without_a_deadline(clock, mocked):
    serve(mocked, "quirky", payload("recent_single_valid.json"))

    make_client(clock).fetch_recent_track("member", "quirky", now=NOW)

    assert mocked.calls[0].request.req_kwargs["timeout"] == (3.05, 10.0)


def test_fetch_recent_track_raises_instead_of_sleeping_past_the_deadline(clock, mocked):
    serve(mocked, "quirky", b"", status=503, headers={"Retry-After": "30"})

    with pytest.raises(lastfm.LastfmTransientError, match="HTTP 503"):
        make_client(clock).fetch_recent_track("member", "quirky", now=NOW, deadline=clock.monotonic() + 10)

    assert len(mocked.calls) == 1
    assert clock.sleeps == []


def test_fetch_recent_track_raises_deadline_when_it_passes_while_reading(mocked):
    clock = FakeClock(step_s=10.0)
    serve(mocked, "quirky", payload("recent_single_valid.json"))

    with pytest.raises(lastfm.LastfmTransientError, match="deadline"):
        make_client(clock).fetch_recent_track("member", "quirky", now=NOW, deadline=clock.monotonic() + 15)


def test_fetch_recent_track_raises_deadline_without_a_request_when_throttle_refuses(clock, mocked):
    limiter = throttle.RateLimiter(1, clock=clock.monotonic, sleep=clock.sleep)
    limiter.pause_until(clock.monotonic() + 100)

    with pytest.raises(lastfm.LastfmTransientError, match="deadline"):
        make_client(clock, throttle=limiter).fetch_recent_track(
            "member", "quirky", now=NOW, deadline=clock.monotonic() + 50
        )

    assert len(mocked.calls) == 0


def test_fetch_recent_track_waits_for_the_throttle_before_each_request(clock, mocked):
    serve(mocked, "first", payload("recent_single_valid.json").replace(b'"quirky"', b'"first"'))
    serve(mocked, "second", payload("recent_single_valid.json").replace(b'"quirky"', b'"second"'))
    client = make_client(clock, throttle=throttle.RateLimiter(2, clock=clock.monotonic, sleep=clock.sleep))

    client.fetch_recent_track("member", "first", now=NOW)
    client.fetch_recent_track("member", "second", now=NOW)

    assert clock.sleeps == [pytest.approx(0.5)]


# -- the request itself and the API key -------------------------------------------


def test_fetch_recent_track_sends_an_identifying_user_agent(clock, mocked):
    serve(mocked, "quirky", payload("recent_single_valid.json"))

    make_client(clock).fetch_recent_track("member", "quirky", now=NOW)

    user_agent = mocked.calls[0].request.headers["User-Agent"]
    assert user_agent == lastfm.USER_AGENT
    assert not user_agent.startswith("python-requests")


def test_fetch_recent_track_omits_api_key_when_none(clock, mocked):
    serve(mocked, "quirky", payload("recent_single_valid.json"), api_key=None)

    make_client(clock, api_key=None).fetch_recent_track("member", "quirky", now=NOW)

    assert "api_key" not in mocked.calls[0].request.url


def exception_texts(error: BaseException) -> list[str]:
    """Return every string a log or a traceback could show for error and its chain."""
    texts = ["".join(traceback.format_exception(error))]
    seen = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts.extend([str(current), repr(current)])
        current = current.__cause__ or current.__context__
    return texts


@pytest.mark.parametrize(
    "failure",
    [
        requests.ConnectionError(f"HTTPSConnectionPool: Max retries exceeded with url: /2.0/?api_key={API_KEY}"),
        requests.ReadTimeout(f"Read timed out for /2.0/?method=user.getrecenttracks&api_key={API_KEY}"),
    ],
)
def test_fetch_recent_track_never_leaks_the_api_key_when_the_request_fails(failure, clock, mocked, caplog):
    caplog.set_level(logging.DEBUG)
    serve(mocked, "quirky", failure)

    with pytest.raises(lastfm.LastfmTransientError) as caught:
        make_client(clock).fetch_recent_track("member", "quirky", now=NOW)

    for text in exception_texts(caught.value):
        assert API_KEY not in text
    assert API_KEY not in caplog.text
    assert "retry" in caplog.text


def test_fetch_recent_track_never_leaks_the_api_key_echoed_in_a_lastfm_message(clock, mocked, caplog):
    caplog.set_level(logging.DEBUG)
    serve(mocked, "quirky", json.dumps({"error": 10, "message": f"Invalid API key {API_KEY}"}), status=403)

    with pytest.raises(lastfm.LastfmFatalError) as caught:
        make_client(clock).fetch_recent_track("member", "quirky", now=NOW)

    for text in exception_texts(caught.value):
        assert API_KEY not in text
    assert API_KEY not in caplog.text


def test_fetch_recent_track_never_leaks_the_api_key_when_an_unexpected_url_is_hit(clock, caplog):
    caplog.set_level(logging.DEBUG)

    # Nothing registered: responses raises a ConnectionError quoting the whole URL.
    with responses.RequestsMock(assert_all_requests_are_fired=False):
        with pytest.raises(lastfm.LastfmTransientError) as caught:
            make_client(clock, max_retries=0).fetch_recent_track("member", "quirky", now=NOW)

    for text in exception_texts(caught.value):
        assert API_KEY not in text
    assert API_KEY not in caplog.text


def test_fetch_recent_track_cleans_and_bounds_lastfm_error_messages(clock, mocked):
    message = "Operation failed\x1b[31m\n" + "x" * 10_000
    serve(mocked, "quirky", json.dumps({"error": 8, "message": message}))

    with pytest.raises(lastfm.LastfmTransientError) as caught:
        make_client(clock, max_retries=0).fetch_recent_track("member", "quirky", now=NOW)

    text = str(caught.value)
    assert len(text) < 400
    assert "\x1b" not in text
    assert "\n" not in text


def test_lastfm_client_repr_hides_the_api_key(clock):
    assert API_KEY not in repr(make_client(clock))


# What the client makes of an answer with one value replaced by each of
# MANGLINGS, per path (list indices included): T raises LastfmTransientError,
# N means no scrobbles, = the same track as the untouched answer, and a field
# name of snapshot.Track the same track with only that field changed (a
# string field replaced by another string, an optional one dropped).
MANGLINGS = (None, 42, 4.5, True, "", "text", [], {}, [None], [{}])
MANGLED_OUTCOMES = {
    "recenttracks": "T T T T T T T N T T",
    "recenttracks.@attr": "T T T T T T T = T T",
    "recenttracks.@attr.user": "= T T T T T T T T T",
    "recenttracks.track": "T T T T T T T T T T",
    "recenttracks.track.0": "T T T T T T T T T T",
    "recenttracks.track.0.@attr": "T T T T T T T T T T",
    "recenttracks.track.0.@attr.nowplaying": "T T T = T T T T T T",
    "recenttracks.track.0.artist": "T T T T T T T T T T",
    "recenttracks.track.0.artist.#text": "T T T T T artist T T T T",
    "recenttracks.track.0.artist.name": "T T T T T artist T T T T",
    "recenttracks.track.0.name": "T T T T T track T T T T",
    "recenttracks.track.0.album": "album T T T T T T album T T",
    "recenttracks.track.0.album.#text": "album T T T album album T T T T",
    "recenttracks.track.0.url": "url T T T url url T T T T",
    "recenttracks.track.0.date": "T T T T T T T T T T",
    "recenttracks.track.0.date.uts": "T played_at T T T T T T T T",
    "recenttracks.track.0.image": "image T T T image T image T T image",
    # The three smaller sizes are never shown; the extralarge one (3) is.
    **{f"recenttracks.track.0.image.{index}": "T T T T T T T = T T" for index in range(3)},
    **{f"recenttracks.track.0.image.{index}.#text": "= T T T = = T T T T" for index in range(3)},
    "recenttracks.track.0.image.3": "T T T T T T T image T T",
    "recenttracks.track.0.image.3.#text": "image T T T image image T T T T",
    "recenttracks.track.0.image.3.size": "image image image image image image image image image image",
}
# Every other path is never read, so any value there leaves the track as it
# is: mbid, streamable, loved, date.#text, the page counts, image sizes but the
# shown one's, the artist's url and images, and every track after the first.
UNREAD = "= = = = = = = = = ="


def mangled_outcome(client: lastfm.LastfmClient, base: snapshot.Track | None, lastfm_username: str) -> str:
    try:
        track = client.fetch_recent_track("member", lastfm_username, now=NOW)
    except lastfm.LastfmTransientError:
        return "T"
    if track is None:
        return "N"
    changed = [
        field.name for field in dataclasses.fields(track) if getattr(track, field.name) != getattr(base, field.name)
    ]
    return " ".join(changed) or "="


def test_fetch_recent_track_answers_each_mangled_shape_as_the_table_says(clock, mocked):
    client = make_client(clock, max_retries=0)
    seen = {}
    for source, lastfm_username in (
        ("recent_single_valid.json", "quirky"),
        ("nowplaying_extended_artist_star_2020", "frikandel_"),
    ):
        untouched = payload_json(source) if source.endswith(".json") else json.loads(recorded(source))
        query = [matchers.query_param_matcher(expected_params(lastfm_username))]
        mocked.add(responses.GET, BASE_URL, json=untouched, match=query)
        base = client.fetch_recent_track("member", lastfm_username, now=NOW)
        mocked.reset()
        assert isinstance(base, snapshot.Track), source

        for path in _all_paths(untouched):
            outcomes = []
            for oddity in MANGLINGS:
                body = copy.deepcopy(untouched)
                _set_path(body, path, oddity)
                mocked.add(responses.GET, BASE_URL, json=body, match=query)
                try:
                    outcomes.append(mangled_outcome(client, base, lastfm_username))
                finally:
                    mocked.reset()
            dotted = ".".join(str(key) for key in path)
            assert outcomes == MANGLED_OUTCOMES.get(dotted, UNREAD).split(" "), (source, dotted)
            seen[dotted] = outcomes

    assert len(seen) > 60
    # Every row of the table was tried on at least one of the two answers.
    assert set(MANGLED_OUTCOMES) <= set(seen)


def _all_paths(value, prefix=()):
    if isinstance(value, dict):
        for key, child in value.items():
            yield prefix + (key,)
            yield from _all_paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield prefix + (index,)
            yield from _all_paths(child, prefix + (index,))


def _set_path(value, path, new):
    for key in path[:-1]:
        value = value[key]
    value[path[-1]] = new

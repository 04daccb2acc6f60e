"""The fake Last.fm server, run as a real subprocess and spoken to over HTTP."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_PATTERN = re.compile(r"^fake-lastfm listening on http://127\.0\.0\.1:(\d+)/2\.0/$")
STARTUP_DEADLINE_S = 10.0
TIMEOUT_S = 10.0
FIXED_CLOCK = 1_796_000_000.0
STAR_URL = "https://lastfm.freetls.fastly.net/i/u/300x300/2a96cbd8b46e442fc41c2b86b821562f.png"
IMAGE_PATTERN = re.compile(r"^https://lastfm\.freetls\.fastly\.net/i/u/(34s|64s|174s|300x300)/[0-9a-f]{32}\.png$")


def start_server(command: list[str], log_file) -> tuple[subprocess.Popen, str]:
    """Start the fake server and return (process, base URL) once it printed its ready line."""
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log_file, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=STARTUP_DEADLINE_S).rstrip("\n")
    except queue.Empty:
        process.kill()
        pytest.fail(f"the fake Last.fm server printed no ready line within {STARTUP_DEADLINE_S} s")
    match = READY_PATTERN.match(line)
    if match is None:
        process.kill()
        pytest.fail(f"unexpected ready line {line!r} (exit code {process.poll()})")
    return process, f"http://127.0.0.1:{match.group(1)}"


def stop_server(process: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    process.send_signal(sig)
    try:
        return process.wait(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    log_path = tmp_path_factory.mktemp("fake_lastfm") / "stderr.log"
    with log_path.open("w") as log_file:
        process, url = start_server([sys.executable, "-m", "devtools.fake_lastfm", "--port", "0"], log_file)
        try:
            yield url
        finally:
            stop_server(process)


@pytest.fixture(autouse=True)
def reset(base_url):
    assert requests.post(f"{base_url}/_fake/reset", timeout=TIMEOUT_S).status_code == 200


def control(base_url: str, path: str, body: dict) -> dict:
    response = requests.post(f"{base_url}/_fake/{path}", json=body, timeout=TIMEOUT_S)
    assert response.status_code == 200, response.text
    return response.json()


def answered_in(base_url: str, mode: str, **options) -> requests.Response:
    """Put alice's account in mode (with the control API's options) and return her recent-tracks answer."""
    control(base_url, "users/alice", {"mode": mode, **options})
    return recent(base_url, "alice")


def recent(base_url: str, user: str | None, **params) -> requests.Response:
    query = {"method": "user.getrecenttracks", "limit": "1", "format": "json", **params}
    if user is not None:
        query["user"] = user
    return requests.get(f"{base_url}/2.0/", params=query, timeout=TIMEOUT_S)


def tracks_of(response: requests.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    return response.json()["recenttracks"]["track"]


def test_recent_tracks_has_the_2024_shape_for_any_user(base_url):
    control(base_url, "clock", {"now": FIXED_CLOCK})
    playing_seen = set()
    for index in range(30):
        user = f"member{index}"
        response = recent(base_url, user, api_key="k")
        document = response.json()["recenttracks"]
        tracks = tracks_of(response)
        assert document["@attr"]["user"] == user
        assert document["@attr"]["page"] == "1" and document["@attr"]["perPage"] == "1"
        assert isinstance(tracks, list)
        # A member listening now has the playing track first and the last scrobble after it.
        playing = tracks[0].get("@attr") == {"nowplaying": "true"}
        assert len(tracks) == (2 if playing else 1)
        playing_seen.add(playing)
        if playing:
            assert "date" not in tracks[0]
        last = tracks[-1]
        assert list(last) == ["artist", "streamable", "image", "mbid", "album", "name", "url", "date"]
        assert "@attr" not in last and int(last["date"]["uts"]) <= FIXED_CLOCK
        assert re.match(r"^\d\d [A-Z][a-z]{2} \d{4}, \d\d:\d\d$", last["date"]["#text"])
        assert last["url"].startswith("https://www.last.fm/music/")
        assert [image["size"] for image in last["image"]] == ["small", "medium", "large", "extralarge"]
        for image in last["image"]:
            assert image["#text"] == "" or IMAGE_PATTERN.match(image["#text"])
    assert playing_seen == {True, False}


@pytest.mark.parametrize("path", ["/2.0/", "/2.0", "/"])
def test_recent_tracks_answers_on_every_api_path(base_url, path):
    response = requests.get(
        f"{base_url}{path}", params={"method": "user.getrecenttracks", "user": "alice"}, timeout=TIMEOUT_S
    )
    assert response.json()["recenttracks"]["@attr"]["user"] == "alice"


def test_recent_tracks_escapes_slashes_and_keeps_utf8_like_lastfm(base_url):
    track = {"artist": "Sigur Rós", "url": "https://x/y"}
    body = answered_in(base_url, "track", track=track).content
    assert b'"url":"https:\\/\\/x\\/y"' in body
    assert '"#text":"Sigur Rós"'.encode() in body


def test_recent_tracks_is_the_same_for_the_same_clock_and_changes_an_hour_later(base_url):
    users = [f"member{index}" for index in range(10)]
    control(base_url, "clock", {"now": FIXED_CLOCK})
    first = [recent(base_url, user).json() for user in users]
    assert [recent(base_url, user).json() for user in users] == first
    control(base_url, "clock", {"now": FIXED_CLOCK + 3600})
    later = [recent(base_url, user).json() for user in users]
    assert all(before != after for before, after in zip(first, later, strict=False))
    control(base_url, "clock", {"now": None})
    assert recent(base_url, "member0").json() != first[0]


@pytest.mark.parametrize(
    ("user", "status", "answer"),
    [
        pytest.param("ghost", 404, {"error": 6, "message": "User not found"}, id="ghost-is-not-found"),
        pytest.param(
            "hidden", 403, {"error": 17, "message": "Login: User required to be logged in"}, id="hidden-is-private"
        ),
    ],
)
def test_quirk_user_gets_lastfms_error(base_url, user, status, answer):
    response = recent(base_url, user)
    assert response.status_code == status
    assert response.json() == answer


def test_quirk_user_quiet_has_no_scrobbles(base_url):
    response = recent(base_url, "quiet")
    assert tracks_of(response) == []
    assert response.json()["recenttracks"]["@attr"]["total"] == "0"


def test_quirk_user_legacy_gets_the_2014_single_object(base_url):
    track = tracks_of(recent(base_url, "legacy"))
    assert isinstance(track, dict) and "date" in track


def test_quirk_user_starry_gets_the_placeholder_star(base_url):
    for track in tracks_of(recent(base_url, "starry")):
        assert track["image"][-1]["#text"] == STAR_URL
        assert all("2a96cbd8b46e442fc41c2b86b821562f" in image["#text"] for image in track["image"])


@pytest.mark.parametrize(
    ("code", "status"),
    [(6, 404), (17, 403), (29, 200), (8, 200), (10, 403), (26, 403), (11, 200), (16, 200)],
)
def test_error_mode_answers_with_the_lastfm_code_and_status(base_url, code, status):
    response = answered_in(base_url, "error", code=code, status=status, message="boom")
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert response.json() == {"error": code, "message": "boom"}


def test_error_mode_defaults_status_and_message_from_the_code(base_url):
    response = answered_in(base_url, "error", code=29)
    assert response.status_code == 200 and response.json()["error"] == 29
    assert response.json()["message"].startswith("Rate Limit Exceeded")


def test_http_mode_with_times_reverts_to_normal_afterwards(base_url):
    control(base_url, "clock", {"now": FIXED_CLOCK})
    normal = tracks_of(recent(base_url, "alice"))
    control(base_url, "users/alice", {"mode": "http", "status": 503, "times": 2})
    for _ in range(2):
        response = recent(base_url, "alice")
        assert response.status_code == 503
        assert response.headers["Content-Type"].startswith("text/html")
    assert tracks_of(recent(base_url, "alice")) == normal


def test_times_reverts_to_the_previous_mode(base_url):
    control(base_url, "users/alice", {"mode": "empty"})
    assert answered_in(base_url, "http", status=502, times=1).status_code == 502
    assert tracks_of(recent(base_url, "alice")) == []


def test_http_mode_429_sends_retry_after(base_url):
    response = answered_in(base_url, "http", status=429, retry_after=7)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"


def test_html_mode_answers_200_with_a_page(base_url):
    response = answered_in(base_url, "html")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.text.lstrip().startswith("<")


def test_truncated_mode_answers_json_that_does_not_parse(base_url):
    response = answered_in(base_url, "truncated")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_huge_mode_streams_at_least_five_megabytes(base_url):
    response = answered_in(base_url, "huge")
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content) >= 5_000_000
    assert response.json()["recenttracks"]["@attr"]["user"] == "alice"


def test_wrong_user_mode_names_another_user(base_url):
    assert answered_in(base_url, "wrong_user").json()["recenttracks"]["@attr"]["user"] != "alice"


def test_track_mode_passes_strings_through_verbatim(base_url):
    payload = '<script>alert("x")</script>&amp;"\''
    track = {
        "artist": payload,
        "album": payload,
        "name": payload,
        "url": "javascript:alert(1)",
        "image": payload,
        "now_playing": False,
        "uts": 1_700_000_000,
    }
    (item,) = tracks_of(answered_in(base_url, "track", track=track))
    assert item["artist"]["#text"] == item["album"]["#text"] == item["name"] == payload
    assert item["url"] == "javascript:alert(1)"
    assert {image["#text"] for image in item["image"]} == {payload}
    assert item["date"] == {"uts": "1700000000", "#text": "14 Nov 2023, 22:13"}


def test_track_mode_now_playing_has_no_date(base_url):
    control(base_url, "users/alice", {"mode": "track", "track": {"artist": "A", "now_playing": True}})
    (item,) = tracks_of(recent(base_url, "alice"))
    assert item["@attr"] == {"nowplaying": "true"} and "date" not in item


def test_now_playing_mode_returns_two_tracks_with_limit_1(base_url):
    playing, last = tracks_of(answered_in(base_url, "now_playing"))
    assert playing["@attr"] == {"nowplaying": "true"} and "date" not in playing
    assert "date" in last and "@attr" not in last


def test_not_playing_mode_returns_one_dated_track(base_url):
    (last,) = tracks_of(answered_in(base_url, "not_playing"))
    assert "date" in last


def test_empty_and_legacy_empty_modes(base_url):
    control(base_url, "users/alice", {"mode": "empty"})
    control(base_url, "users/bob", {"mode": "legacy_empty"})
    assert tracks_of(recent(base_url, "alice")) == []
    document = recent(base_url, "bob").json()["recenttracks"]
    assert "track" not in document and "@attr" not in document
    assert document["user"] == "bob" and document["total"] == "0"


def test_all_mode_applies_to_every_user_but_per_user_modes_win(base_url):
    control(base_url, "all", {"mode": "http", "status": 503})
    control(base_url, "users/alice", {"mode": "normal"})
    assert recent(base_url, "bob").status_code == 503
    assert recent(base_url, "ghost").status_code == 503
    assert recent(base_url, "alice").status_code == 200
    control(base_url, "all", {"mode": "normal"})
    assert recent(base_url, "bob").status_code == 200


def test_slow_mode_does_not_block_other_requests(base_url):
    control(base_url, "users/sleepy", {"mode": "slow", "delay_s": 3})
    results: list[int] = []
    slow = threading.Thread(target=lambda: results.append(recent(base_url, "sleepy").status_code))
    slow.start()
    deadline = time.monotonic() + TIMEOUT_S
    while requests.get(f"{base_url}/_fake/stats", timeout=TIMEOUT_S).json()["by_user"].get("sleepy") != 1:
        assert time.monotonic() < deadline, "the slow request never reached the server"
        time.sleep(0.01)  # poll interval, not synchronisation: the loop above has the deadline
    assert recent(base_url, "alice").status_code == 200
    assert slow.is_alive(), "the other request should have finished while the slow one was still waiting"
    slow.join(timeout=TIMEOUT_S)
    assert results == [200]


def test_hang_mode_closes_without_an_answer(base_url):
    control(base_url, "users/alice", {"mode": "hang", "delay_s": 0.5})
    with pytest.raises(requests.ConnectionError):
        recent(base_url, "alice")


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"api_key": "invalid"}, 403, 10),
        ({"api_key": "suspended"}, 403, 26),
        ({"method": "user.nosuchmethod"}, 400, 3),
        ({"method": ""}, 400, 3),
    ],
)
def test_request_validation_answers_like_lastfm(base_url, params, status, code):
    response = recent(base_url, "alice", **params)
    assert response.status_code == status
    assert response.json()["error"] == code


def test_missing_user_is_not_found(base_url):
    response = recent(base_url, None)
    assert response.status_code == 404 and response.json()["error"] == 6


def test_stats_count_requests_users_and_keys(base_url):
    recent(base_url, "alice", api_key="secret-1")
    recent(base_url, "alice")
    recent(base_url, "Bob", api_key="secret-2")
    stats = requests.get(f"{base_url}/_fake/stats", timeout=TIMEOUT_S).json()
    assert stats == {"requests": 3, "by_user": {"alice": 2, "bob": 1}, "api_keys_seen": 2}
    assert "secret" not in json.dumps(stats)


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("nowhere", {}, 404),
        ("users/alice", {"mode": "bogus"}, 400),
        ("users/alice", {"mode": "error"}, 400),
        ("users/alice", {"mode": "http", "status": 503, "times": 0}, 400),
        ("clock", {"now": "soon"}, 400),
        ("latency", {"ms": -1}, 400),
    ],
)
def test_control_rejects_bad_requests_with_json(base_url, path, body, status):
    response = requests.post(f"{base_url}/_fake/{path}", json=body, timeout=TIMEOUT_S)
    assert response.status_code == status
    assert "\n" not in response.json()["error"]


def test_control_rejects_invalid_json(base_url):
    response = requests.post(f"{base_url}/_fake/users/alice", data=b"{not json", timeout=TIMEOUT_S)
    assert response.status_code == 400 and "error" in response.json()


def test_latency_control_is_accepted(base_url):
    assert control(base_url, "latency", {"ms": 0}) == {"ok": True, "ms": 0}


@pytest.mark.parametrize(
    ("command", "sig"),
    [(["-m", "devtools.fake_lastfm"], signal.SIGTERM), (["-m", "devtools.fake_lastfm"], signal.SIGINT)],
)
def test_server_exits_0_on_signal_and_never_logs_the_key(tmp_path, command, sig):
    log_path = tmp_path / "stderr.log"
    with log_path.open("w") as log_file:
        process, url = start_server([sys.executable, *command, "--port", "0", "--seed", "3"], log_file)
        try:
            assert recent(url, "alice", api_key="top-secret-key").status_code == 200
        finally:
            exit_code = stop_server(process, sig)
    assert exit_code == 0
    log = log_path.read_text()
    assert 'user="alice"' in log and "status=200" in log
    assert "top-secret-key" not in log

"""memcached faults against the real site: hung, stopped, restarted, full, or holding garbage under our keys."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time
from contextlib import closing
from pathlib import Path

import pytest

from app.core import cache as cache_module
from app.core.snapshot import pointer_key
from app.core.snapshot import snapshot_key
from app.warm import members
from app.web import reader as reader_module
from tests.faults.helpers import PageParser
from tests.faults.helpers import page_state
from tests.faults.helpers import timed_get
from tests.support import MemcachedProcess
from tests.support.memcached import cache_set
from tests.support.memcached import memcached_stats
from tests.support.stack import API_PATH
from tests.support.stack import PREFIX
from tests.support.stack import Stack
from tests.support.stack import snapshot_at
from tests.support.warmlog import summary_of

MEMBERS = ("alice", "bob", "carol", "dave", "erin")
# Read, step 1 (docs/design.md): a dead or hung cache is `unavailable` within this bound.
UNAVAILABLE_BOUND_S = 0.5
VISITORS = 2
REQUESTS_PER_VISITOR = 12
FAKE_CLOCK_S = 1_500_000_000
DEFAULT_ITEMS = 8  # LISTENS_ITEMS


@pytest.fixture
def site(make_stack):
    """A published site whose memcached the test may hang, stop or restart."""
    stack = make_stack(members=MEMBERS)
    stack.warm_ok()
    return stack


def visit_while_down(stack) -> list[tuple[str, int, float, str]]:
    """Load /, the API and /healthz from VISITORS concurrent visitors; return (path, status, seconds, state)."""
    paths = ("/", API_PATH, "/healthz")

    def visitor(index: int) -> list[tuple[str, int, float, str]]:
        seen = []
        for number in range(REQUESTS_PER_VISITOR):
            path = paths[(index + number) % len(paths)]
            response, seconds = timed_get(stack.web.url + path)
            state = page_state(response.text) if path == "/" else response.json()["state"]
            seen.append((path, response.status_code, seconds, state))
        return seen

    with concurrent.futures.ThreadPoolExecutor(VISITORS) as pool:
        return [item for result in pool.map(visitor, range(VISITORS)) for item in result]


def booted_workers(stack) -> int:
    return stack.log().count("Booting worker")


def test_reader_timeouts_are_set_well_below_the_unavailable_bound():
    # The bound is only met because every libmemcached step is bounded; pylibmc's defaults wait seconds.
    client = cache_module.connect(("127.0.0.1:1",))
    behaviors = client.behaviors

    assert behaviors["connect_timeout"] == cache_module.READER_TIMEOUT_MS
    assert behaviors["_poll_timeout"] == cache_module.READER_TIMEOUT_MS
    assert behaviors["receive_timeout"] == behaviors["send_timeout"] == cache_module.READER_TIMEOUT_MS * 1000
    # The worst case: a first read failing just inside the retry window, then a second read timing
    # out (a timed-out get, then the confirming get failing at once); it must leave room for rendering.
    assert reader_module.RETRY_WITHIN_S + cache_module.READER_TIMEOUT_MS / 1000 <= UNAVAILABLE_BOUND_S * 0.75


@pytest.mark.parametrize("fault", ["hung", "stopped"])
def test_page_is_stale_or_unavailable_within_bound_when_memcached_fails_and_recovers_without_gunicorn_restart(
    fault, site
):
    before = site.api()
    assert before["state"] == "fresh" and before["data"]
    master = site.web.process.pid
    workers = booted_workers(site)

    # Hung: connections are accepted by the kernel, nothing is answered; stopped: started again empty.
    with site.cache_down(hung=fault == "hung"):
        seen = visit_while_down(site)

    slow = [item for item in seen if item[2] >= UNAVAILABLE_BOUND_S]
    assert not slow, slow
    assert {(path, status) for path, status, _, _ in seen} == {("/", 200), (API_PATH, 200), ("/healthz", 503)}
    # A worker that showed the list keeps showing it (stale-if-error); one that holds nothing is unavailable.
    assert {state for _, _, _, state in seen} <= {"stale", "unavailable"}
    # Recovery: the very next request of each worker, no restart of gunicorn.
    expected = "fresh" if fault == "hung" else "warming"
    recovered = [site.api() for attempt in range(4)]
    assert [data["state"] for data in recovered] == [expected] * 4
    if fault == "hung":
        assert all(data == before for data in recovered)
    else:
        assert site.get("/healthz").json()["memcached"] == "reachable"
        site.warm_ok()
        assert site.api()["state"] == "fresh"
    assert site.web.process.poll() is None and site.web.process.pid == master
    assert booted_workers(site) == workers, site.log()


def track_contents(data: dict) -> dict[str, tuple]:
    """Return what a visitor sees of each member's track, by member."""
    fields = ("artist", "track", "playedAt", "nowPlaying", "fetchedAt")
    return {item["username"]: tuple(item[field] for field in fields) for item in data["data"]}


def as_carried(data: dict) -> dict[str, tuple]:
    """Return track_contents after a carry-over: an old "now playing" becomes played when last seen."""
    carried = {}
    for username, (artist, track, played_at, now_playing, fetched_at) in track_contents(data).items():
        carried[username] = (artist, track, fetched_at if now_playing else played_at, False, fetched_at)
    return carried


def test_memcached_restart_while_lastfm_down_republishes_last_known_tracks_as_stale(make_stack):
    stack = make_stack(members=MEMBERS)
    # Published ten minutes ago, so the true lastUpdated is older than the freshness window.
    # Last.fm's clock goes back with it: a playedAt ahead of the run's clock is refused.
    stack.lastfm.control("clock", {"now": time.time() - 600})
    first = stack.paused("ten-minutes-ago", now_offset_s=-600).finish()
    stack.lastfm.control("clock", {"now": None})
    assert first.returncode == 0 and first.summary["outcome"] == "published", first.stderr
    before = stack.api()
    assert before["state"] == "stale" and len(before["data"]) == len(MEMBERS)

    stack.cache.restart()  # a real restart: every key is lost
    stack.lastfm.control("all", {"mode": "http", "status": 503})
    assert stack.api()["state"] == "warming"
    restored = stack.warm()

    assert restored.returncode == 1, restored.stderr
    summary = summary_of(restored.stderr)
    counts = (summary["outcome"], summary["fetched"], summary["failed"], summary["carried"])
    assert counts == ("restored", "0", "5", "5")
    after = stack.api()
    assert after["state"] == "stale" and after["lastUpdated"] == before["lastUpdated"]
    assert after["generation"] == int(summary["generation"]) > before["generation"]
    assert track_contents(after) == as_carried(before)
    page = stack.page()
    assert page_state(page) == "stale" and f'datetime="{before["lastUpdated"]}"' in page
    shown = PageParser.parse(page).texts
    assert all(item["track"] in shown for item in before["data"])
    # While Last.fm stays down, later runs leave the restored snapshot alone.
    again = stack.warm()
    assert again.returncode == 1 and summary_of(again.stderr)["outcome"] == "failed"
    assert stack.api()["generation"] == after["generation"]
    stack.lastfm.control("reset")
    assert stack.warm_ok()["fetched"] == "5"
    assert stack.api()["state"] == "fresh"


def last_tracks(stack) -> dict[str, object]:
    with closing(members.connect(Path(stack.env["LISTENS_DATABASE"]))) as connection:
        known = {member.username: member.last_track for member in members.list_members(connection)}
        run = members.last_run(connection)
    return {"tracks": known, "last_run": dict(run) if run is not None else None}


@pytest.mark.parametrize("fault", ["refused-from-start", "stopped-after-fetch", "hung-after-fetch"])
def test_warm_run_exits_1_when_memcached_unreachable_and_next_run_publishes(fault, site):
    published = site.pointer().generation
    # Tracks of 2017 (never the future: a playedAt ahead of the run's clock is refused), so the database visibly changes.
    site.lastfm.control("clock", {"now": FAKE_CLOCK_S})
    if fault == "refused-from-start":
        site.cache.stop()
    run = site.paused("unreachable", pause_at=("fetched",))
    generation = run.wait_reached("fetched")
    if fault == "stopped-after-fetch":
        site.cache.stop()
    elif fault == "hung-after-fetch":
        site.cache.pause()
    run.release("fetched")
    try:
        run.finish(timeout_s=30)
    finally:
        if fault == "hung-after-fetch":
            site.cache.resume()
        else:
            site.cache.start()

    assert run.returncode == 1, run.stderr
    assert (run.summary["outcome"], run.summary["fetched"]) == ("failed", "5")
    assert "memcached" in run.summary["error"]
    # The database kept this run's fetches and its failed run, whatever happened to the cache.
    database = last_tracks(site)
    tracks = database["tracks"].values()
    assert all(track is not None for track in tracks)
    assert all(track.now_playing or track.played_at.timestamp() <= FAKE_CLOCK_S for track in tracks)
    assert database["last_run"]["generation"] == generation and database["last_run"]["exit_code"] == 1
    if fault == "hung-after-fetch":
        assert site.pointer().generation == published  # the pointer never moved to the unverified run
    following = site.warm_ok()
    assert site.pointer().generation == int(following["generation"]) > generation
    assert site.api()["state"] == "fresh"


def test_next_request_after_quick_memcached_restart_is_served_not_unavailable(site):
    # Each worker keeps a connection; a restart between two requests kills it.
    with concurrent.futures.ThreadPoolExecutor(VISITORS) as pool:
        assert all(data["state"] == "fresh" for data in pool.map(lambda index: site.api(), range(8)))

    site.cache.restart()

    with concurrent.futures.ThreadPoolExecutor(VISITORS) as pool:
        states = list(pool.map(lambda index: site.api()["state"], range(8)))
    assert states == ["warming"] * 8


# -- item 6: a full memcached evicts snapshots while the pointer survives ---------------------------------------

# Two megabytes (memcached's smallest with this item limit), a smaller item
# limit, no page moving between slab classes (filling one size class evicts
# only items of that size), and a flat LRU, so an item read recently (the
# warm job's read-back) is evicted like any other instead of being promoted.
TINY_MEMCACHED_ARGS = ("-I", "512k", "-o", "slab_automove=0,no_lru_maintainer")


def fill_cache(address: str, item_bytes: int, total_bytes: int = 3_000_000) -> None:
    """Store items of item_bytes (one slab class) until total_bytes went in; memcached evicts that class's LRU tail."""
    host, port = address.rsplit(":", 1)
    value = b"f" * item_bytes
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        for index in range(total_bytes // item_bytes + 1):
            header = f"set {PREFIX}:filler:{index:020d} 0 0 {item_bytes} noreply\r\n"
            connection.sendall(header.encode() + value + b"\r\n")
        connection.sendall(b"version\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            reply += connection.recv(100)
    assert reply.startswith(b"VERSION"), reply


@pytest.fixture
def tiny_site(make_stack):
    return make_stack(cache=MemcachedProcess(memory_mb=2, extra_args=TINY_MEMCACHED_ARGS))


def assert_answered(response, path: str) -> None:
    """The page and the API answer 200 whatever the cache holds; /healthz 503 exactly when it says it cannot serve."""
    if path == "/healthz":
        health = response.json()
        unhealthy = health["state"] == "unavailable" or health["memcached"] == "unreachable"
        assert response.status_code == (503 if unhealthy else 200), health
    else:
        assert response.status_code == 200, (path, response.status_code)


def assert_served_without_errors(stack, requests_count: int = 20) -> None:
    for _index in range(requests_count):
        for path in ("/", API_PATH, "/healthz"):
            assert_answered(stack.get(path), path)
    assert "Traceback" not in stack.log() and "unhandled error" not in stack.log()


def test_page_falls_back_to_previous_generation_when_current_snapshot_is_evicted(tiny_site):
    tiny_site.add_members("alice")
    first = int(tiny_site.warm_ok()["generation"])
    tiny_site.add_members(*(f"member{index:02d}" for index in range(24)))
    second = int(tiny_site.warm_ok()["generation"])
    big = len(snapshot_at(tiny_site.cache.address, second))
    assert big > 4 * len(snapshot_at(tiny_site.cache.address, first))  # different slab classes

    fill_cache(tiny_site.cache.address, big)

    assert memcached_stats(tiny_site.cache.address)["evictions"] > 0
    assert tiny_site.pointer().generation == second
    assert snapshot_at(tiny_site.cache.address, second) is None
    assert snapshot_at(tiny_site.cache.address, first) is not None
    data = tiny_site.api()
    assert (data["state"], data["generation"]) == ("fresh", first)
    assert [item["username"] for item in data["data"]] == ["alice"]
    assert page_state(tiny_site.page()) == "fresh"
    assert_served_without_errors(tiny_site)
    third = tiny_site.warm_ok()
    assert tiny_site.api()["generation"] == int(third["generation"])


def test_page_says_warming_when_every_snapshot_is_evicted_and_next_run_restores_it(tiny_site):
    tiny_site.add_members(*(f"member{index:02d}" for index in range(25)))
    first = int(tiny_site.warm_ok()["generation"])
    second = int(tiny_site.warm_ok()["generation"])
    # Read from memcached, not the API: a worker that served a snapshot keeps serving it from memory.
    before = json.loads(snapshot_at(tiny_site.cache.address, second))

    fill_cache(tiny_site.cache.address, len(snapshot_at(tiny_site.cache.address, second)))

    assert tiny_site.pointer().generation == second
    assert snapshot_at(tiny_site.cache.address, first) is None
    assert snapshot_at(tiny_site.cache.address, second) is None
    assert page_state(tiny_site.page()) == "warming"
    health = tiny_site.get("/healthz").json()
    assert (health["memcached"], health["state"], health["generation"]) == ("reachable", "warming", None)
    assert_served_without_errors(tiny_site)
    # Last.fm is down as well: the pointer alone is not a snapshot, so the last known tracks come back.
    tiny_site.lastfm.control("all", {"mode": "http", "status": 503})
    restored = tiny_site.warm()
    assert restored.returncode == 1 and summary_of(restored.stderr)["outcome"] == "restored", restored.stderr
    after = tiny_site.api()
    assert after["lastUpdated"] == before["lastUpdated"]
    assert len(after["data"]) == min(DEFAULT_ITEMS, len(before["tracks"]))


# -- item 7: garbage under our own keys ---------------------------------------------------------------------------


def valid_snapshot(generation: int, **track_changes) -> dict:
    track = {
        "username": "mallory",
        "lastfmUsername": "mallory",
        "artist": "Artist",
        "album": "Album",
        "track": "GARBAGE-SHOWN",
        "url": "https://www.last.fm/music/Artist",
        "image": "",
        "playedAt": "2026-12-01T11:00:00Z",
        "nowPlaying": False,
        "fetchedAt": "2026-12-01T12:00:00Z",
    }
    track.update(track_changes)
    return {
        "version": 2,
        "generation": generation,
        "lastUpdated": "2026-12-01T12:00:00Z",
        "tracks": [track],
        "stats": {},
    }


def garbage(generation: int, *, document: dict | None = None, **track_changes) -> bytes:
    return json.dumps(document or valid_snapshot(generation, **track_changes)).encode()


def as_bytes(document: dict) -> bytes:
    return json.dumps(document).encode()


# name -> (bytes to store under the snapshot key of generation g, what the warning must say)
GARBAGE_SNAPSHOTS = {
    "bad-json": (lambda g: b'{"version": 2, "generation": ' + str(g).encode(), "snapshot is not JSON"),
    "wrong-version": (lambda g: garbage(g, document=valid_snapshot(g) | {"version": 1}), "version 1 is not 2"),
    "wrong-generation": (lambda g: garbage(g, document=valid_snapshot(g - 7)), "does not match the key's"),
    "tracks-not-a-list": (
        lambda g: garbage(g, document=valid_snapshot(g) | {"tracks": "GARBAGE-SHOWN"}),
        "tracks is not a list",
    ),
    "artist-a-number": (lambda g: garbage(g, artist=5), "tracks[0].artist is not a string"),
    "now-playing-a-string": (lambda g: garbage(g, nowPlaying="yes"), "tracks[0].nowPlaying is not a boolean"),
    "played-at-not-a-time": (lambda g: garbage(g, playedAt="yesterday"), "tracks[0].playedAt 'yesterday'"),
    "stats-not-numbers": (
        lambda g: garbage(g, document=valid_snapshot(g) | {"stats": {"members": "many"}}),
        "stats is not an object",
    ),
    "lone-surrogate": (lambda g: garbage(g, artist="\ud800"), "tracks[0].artist is not valid Unicode"),
    "javascript-url": (lambda g: garbage(g, url="javascript:alert(1)"), "tracks[0].url is not an https link"),
    "data-image": (
        lambda g: garbage(g, image="data:image/svg+xml,<svg onload=alert(1)>"),
        "tracks[0].image is not an https image",
    ),
    "deep-nesting": (lambda g: b"[" * 100_000, "snapshot is not JSON (RecursionError)"),
    "900-kb-blob": (lambda g: b"x" * 900_000, "snapshot is not JSON"),
    "old-format-list": (lambda g: b"[]", "snapshot is not a JSON object"),
}

# name -> (bytes to store under the pointer key, what the warning must say)
GARBAGE_POINTERS = {
    "not-json": (b"{generation: 1}", "pointer is not JSON"),
    "deep-nesting": (b"[" * 100_000, "pointer is not JSON (RecursionError)"),
    "generation-negative": (b'{"generation": -5, "previous": null}', "pointer generation -5 is not a positive"),
    "generation-a-string": (b'{"generation": "12", "previous": null}', "pointer generation '12' is not a positive"),
    "previous-not-older": (b'{"generation": 5, "previous": 9}', "pointer previous 9 is not null"),
    "old-format-list": (b"[]", "pointer is not a JSON object"),
}


@pytest.fixture(scope="module")
def garbage_site(tmp_path_factory):
    """A site with one valid published generation; each test puts garbage beside it and puts the pointer back."""
    with Stack(tmp_path_factory.mktemp("garbage")) as stack:
        stack.add_members(*MEMBERS)
        stack.warm_ok()
        yield stack


def assert_garbage_never_shown(stack, key: str, reason: str, log_before: int) -> None:
    """Load every page: never an error, never the garbage; the log warns about key with reason."""
    paths = ("/", API_PATH, "/healthz", "/", API_PATH)
    responses = [stack.get(path) for path in paths]
    for response, path in zip(responses, paths, strict=True):
        assert_answered(response, path)
    assert all("GARBAGE-SHOWN" not in response.text and "alert(1)" not in response.text for response in responses)
    log = stack.log()[log_before:]
    warnings = [line for line in log.splitlines() if key in line]
    assert warnings, log
    assert all(line.startswith("level=WARNING logger=app.reader ") and reason in line for line in warnings), warnings
    assert "Traceback" not in log and "level=ERROR" not in log


@pytest.mark.parametrize("name", sorted(GARBAGE_SNAPSHOTS))
def test_garbage_snapshot_is_never_rendered_and_page_falls_back_when(name, garbage_site):
    current = garbage_site.pointer().generation
    bad = current + 1 + sorted(GARBAGE_SNAPSHOTS).index(name)  # a key no earlier test warned about
    make, reason = GARBAGE_SNAPSHOTS[name]
    log_before = len(garbage_site.log())
    cache_set(garbage_site.cache.address, snapshot_key(PREFIX, bad), make(bad))
    cache_set(garbage_site.cache.address, pointer_key(PREFIX), as_bytes({"generation": bad, "previous": current}))
    try:
        data = garbage_site.api()

        assert (data["state"], data["generation"], len(data["data"])) == ("fresh", current, len(MEMBERS))
        assert_garbage_never_shown(garbage_site, snapshot_key(PREFIX, bad), reason, log_before)
    finally:
        cache_set(garbage_site.cache.address, pointer_key(PREFIX), as_bytes({"generation": current, "previous": None}))


@pytest.mark.parametrize("name", sorted(GARBAGE_POINTERS))
def test_garbage_pointer_is_unavailable_never_an_error_and_next_run_replaces_it_when(name, garbage_site):
    raw, reason = GARBAGE_POINTERS[name]
    log_before = len(garbage_site.log())
    cache_set(garbage_site.cache.address, pointer_key(PREFIX), raw)

    data = garbage_site.api()

    assert (data["state"], data["data"], data["generation"]) == ("unavailable", [], None)
    assert page_state(garbage_site.page()) == "unavailable"
    assert_garbage_never_shown(garbage_site, pointer_key(PREFIX), reason, log_before)
    # The warm job replaces a garbage pointer instead of failing on it.
    assert garbage_site.warm().returncode == 0
    assert garbage_site.api()["state"] == "fresh"

"""The snapshot protocol against a real memcached: publish, read, states, and the old failure."""

from __future__ import annotations

import ast
import dataclasses
import logging
import re
import time
from datetime import UTC
from datetime import datetime
from datetime import timedelta

import pylibmc
import pytest

from app import create_app
from app.core import cache
from app.core.snapshot import decode_pointer
from app.core.snapshot import lease_key
from app.core.snapshot import legacy_keys
from app.core.snapshot import pointer_key
from app.core.snapshot import snapshot_key
from app.warm import job
from app.warm import members
from tests import support
from tests.support import REPO
from tests.support import MemcachedProcess
from tests.support.clock import FakeClock
from tests.support.lastfm_stub import LastfmStub
from tests.support.lastfm_stub import recent_payload
from tests.support.memcached import WRITE_COUNTERS
from tests.support.memcached import cache_delete
from tests.support.memcached import memcached_stats
from tests.support.processes import run_python

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
PREFIX = "user-listens"

STATE_WORDING = {
    "warming": "Warming up",
    "unavailable": "Listening activity is unavailable right now",
    "empty": "Nobody has listened to anything recently",
    "stale": "These listens may be out of date",
    "fresh": "Last updated",
}


def add_members(settings, *names: str, private: tuple[str, ...] = ()) -> None:
    support.add_members(settings.database, names, private=private, now=T0)


def answer_everyone(stub: LastfmStub, when: datetime) -> None:
    stub.answers.update(
        {
            "alice": recent_payload(
                "alice", "Björk", "Hyperballad", now_playing=True, played=when - timedelta(minutes=9)
            ),
            "bob": recent_payload("bob", "Sigur Rós", "Hoppípolla", played=when - timedelta(minutes=3)),
            "carol": recent_payload("carol", "Low", "Words", played=when - timedelta(minutes=30)),
        }
    )


def three_members_answering(settings, stub: LastfmStub) -> None:
    """alice, bob and carol are members, and the mocked Last.fm answers for each of them at T0."""
    add_members(settings, "alice", "bob", "carol")
    answer_everyone(stub, T0)


def run_at(settings, when: datetime, **kwargs) -> job.RunResult:
    return job.run(settings, now=when, **kwargs)


def raw_client(settings):
    return cache.connect(settings.memcached_servers, timeout_ms=cache.WRITER_TIMEOUT_MS)


def current_generation(settings) -> int:
    return decode_pointer(raw_client(settings).get(pointer_key(PREFIX))).generation


def api(client) -> dict:
    response = client.get("/api/internal/user-listens")
    assert response.status_code == 200
    return response.get_json()


def page_state(client) -> str:
    response = client.get("/")
    assert response.status_code == 200
    return re.search(r'data-state="(\w+)"', response.get_data(as_text=True)).group(1)


@pytest.fixture
def published(settings, memcached, stub):
    """Three members, one run at T0 published."""
    three_members_answering(settings, stub)
    result = run_at(settings, T0)
    assert result.exit_code == 0 and result.outcome == "published", result.summary()
    return result


def test_warm_publishes_snapshot_that_page_and_api_show(published, settings):
    client = create_app(settings, clock=FakeClock(T0 + timedelta(minutes=1)).now).test_client()
    data = api(client)

    assert data["state"] == "fresh"
    assert data["generation"] == published.generation
    assert [item["username"] for item in data["data"]] == ["alice", "bob", "carol"]
    assert data["data"][0]["nowPlaying"] is True
    assert data["version"] == 2 and data["cached"] is True
    page = client.get("/").get_data(as_text=True)
    assert "Hyperballad" in page and "Hoppípolla" in page and "Now playing" in page


def test_warm_summary_counts_members(published):
    assert (published.members, published.fetched, published.carried, published.dropped, published.failed) == (
        3,
        3,
        0,
        0,
        0,
    )
    assert published.tracks == 3


def test_old_format_writer_changes_nothing_a_visitor_sees(published, client, settings):
    before = api(client)
    # behaviors={}: with None, pylibmc 1.6.3 on Python 3.13 reports ignored errors while it probes them.
    old_writer = pylibmc.Client(list(settings.memcached_servers), behaviors={})
    for key in legacy_keys(PREFIX):
        old_writer.set(key, "[]")
    old_writer.set(f"{PREFIX}:recent", [])

    after = api(client)

    assert after == before
    assert len(after["data"]) == 3


def test_older_generation_finishing_after_newer_leaves_newer_current(settings, memcached, stub):
    add_members(settings, "alice", "bob", "carol")
    answer_everyone(stub, T0)
    newer_settings = dataclasses.replace(settings, lock_file=settings.database.with_name("other-host.lock"))
    newer_at = T0 + timedelta(seconds=5)
    newer = {}

    def run_newer_meanwhile(step: str) -> None:
        if step == "read-back":
            # The older run's lease has expired (it was too slow): another host runs a whole newer cycle now.
            cache_delete(memcached.address, lease_key(PREFIX))
            newer["result"] = run_at(newer_settings, newer_at)

    older = run_at(settings, T0, checkpoint=run_newer_meanwhile)

    assert newer["result"].outcome == "published"
    assert older.outcome == "superseded" and older.exit_code == 0
    assert current_generation(settings) == newer["result"].generation > older.generation


def test_older_generation_started_later_never_moves_pointer_back(published, settings, stub):
    result = run_at(settings, T0 - timedelta(minutes=5))

    assert result.outcome == "superseded"
    assert current_generation(settings) == published.generation


def test_web_requests_never_write_to_memcached(published, client, memcached):
    before = memcached_stats(memcached.address)
    for _index in range(250):
        assert client.get("/").status_code == 200
        assert client.get("/api/internal/user-listens").status_code == 200
    after = memcached_stats(memcached.address)

    assert {name: after[name] - before[name] for name in WRITE_COUNTERS} == {name: 0 for name in WRITE_COUNTERS}
    assert after["cmd_get"] > before["cmd_get"]


def test_lastfm_failing_for_everyone_publishes_nothing_and_page_goes_stale(published, settings, stub, app):
    stub.fail_everyone()

    result = run_at(settings, T0 + timedelta(minutes=5))

    assert result.exit_code == 1 and result.outcome == "failed"
    assert (result.fetched, result.failed, result.carried) == (0, 3, 3)
    assert current_generation(settings) == published.generation
    reader = app.extensions["listens"].reader
    assert reader.read(T0 + timedelta(minutes=6)).state.value == "fresh"
    late = reader.read(T0 + timedelta(seconds=settings.fresh_s + 1))
    assert late.state.value == "stale"
    assert [track.username for track in late.snapshot.tracks] == ["alice", "bob", "carol"]


@pytest.mark.parametrize("change", ["private", "removed"])
def test_member_disappears_on_next_run_when(change, published, settings, stub, client):
    connection = members.connect(settings.database)
    if change == "private":
        members.set_visibility(connection, "bob", False)
    else:
        members.remove_member(connection, "bob")
    connection.close()

    result = run_at(settings, T0 + timedelta(minutes=5))

    assert result.outcome == "published"
    assert [item["username"] for item in api(client)["data"]] == ["alice", "carol"]


@pytest.mark.parametrize(("code", "status"), [(6, 404), (17, 403)])
def test_member_gone_on_lastfm_is_dropped_at_once(code, status, published, settings, stub, client):
    stub.answers["bob"] = (status, {"error": code, "message": "gone"})

    result = run_at(settings, T0 + timedelta(minutes=5))

    assert (result.fetched, result.dropped, result.failed) == (2, 1, 0)
    assert [item["username"] for item in api(client)["data"]] == ["alice", "carol"]


def test_transient_failure_keeps_member_last_known_track(published, settings, stub, client):
    stub.answers["bob"] = (502, "<html>Bad Gateway</html>")

    result = run_at(settings, T0 + timedelta(minutes=5))

    assert (result.fetched, result.carried, result.failed) == (2, 1, 1)
    bob = [item for item in api(client)["data"] if item["username"] == "bob"]
    assert bob and bob[0]["track"] == "Hoppípolla"


def test_memcached_restart_while_lastfm_down_restores_last_known_tracks(published, settings, stub, memcached, app):
    memcached.flush()
    stub.fail_everyone()
    later = T0 + timedelta(minutes=30)

    result = run_at(settings, later)

    assert result.exit_code == 1 and result.outcome == "restored"
    reading = app.extensions["listens"].reader.read(later)
    assert reading.state.value == "stale"
    assert reading.snapshot.last_updated == T0
    assert [track.username for track in reading.snapshot.tracks] == ["alice", "bob", "carol"]


def test_every_state_has_its_own_wording(settings, memcached, stub):
    clock = FakeClock(T0 + timedelta(days=1))
    now = clock.now()
    client = create_app(settings, clock=clock.now).test_client()
    pages = {"warming": client.get("/").get_data(as_text=True)}
    add_members(settings, "alice", "bob", "carol")
    # Generations only move forward, so the runs go from the oldest start time.
    answer_everyone(stub, now - timedelta(hours=1))
    run_at(settings, now - timedelta(hours=1))
    pages["stale"] = client.get("/").get_data(as_text=True)
    stub.answers.update(
        {name: {"recenttracks": {"track": [], "@attr": {"user": name}}} for name in ("alice", "bob", "carol")}
    )
    run_at(settings, now - timedelta(minutes=2))
    pages["empty"] = client.get("/").get_data(as_text=True)
    answer_everyone(stub, now)
    run_at(settings, now)
    pages["fresh"] = client.get("/").get_data(as_text=True)
    dead = create_app(dataclasses.replace(settings, memcached_servers=("127.0.0.1:1",)))
    pages["unavailable"] = dead.test_client().get("/").get_data(as_text=True)

    for state, page in pages.items():
        assert f'data-state="{state}"' in page
        shown = {other for other, wording in STATE_WORDING.items() if wording in page}
        assert shown == {state}, state


def test_reader_falls_back_to_previous_generation_when_current_is_evicted(published, settings, stub, app, memcached):
    answer_everyone(stub, T0 + timedelta(minutes=5))
    stub.answers["alice"] = recent_payload("alice", "Low", "Lullaby", played=T0 + timedelta(minutes=4))
    second = run_at(settings, T0 + timedelta(minutes=5))
    cache_delete(memcached.address, snapshot_key(PREFIX, second.generation))

    reading = app.extensions["listens"].reader.read(T0 + timedelta(minutes=6))

    assert reading.snapshot.generation == published.generation
    assert reading.state.value == "fresh"


def test_reader_says_warming_when_pointer_survives_but_snapshots_are_gone(published, settings, app, memcached):
    cache_delete(memcached.address, snapshot_key(PREFIX, published.generation))

    assert app.extensions["listens"].reader.read(T0).state.value == "warming"


@pytest.mark.parametrize(
    "garbage",
    [
        b"not json",
        b'{"version": 1, "generation": 1, "tracks": []}',
        b'{"version": 2, "generation": 5, "tracks": []}',
        b'{"version": 2, "generation": GEN, "lastUpdated": "2026-12-01T12:00:00Z", "tracks": "oops"}',
        b"x" * 900_000,
    ],
)
def test_reader_never_shows_garbage_snapshot_and_logs_key(garbage, settings, memcached, client, caplog):
    generation = 1_700_000_000_000_000
    writer = raw_client(settings)
    writer.set(pointer_key(PREFIX), b'{"generation": %d, "previous": null}' % generation)
    writer.set(snapshot_key(PREFIX, generation), garbage.replace(b"GEN", str(generation).encode()))

    with caplog.at_level(logging.WARNING, logger="app.reader"):
        response = client.get("/")

    assert response.status_code == 200
    assert 'data-state="unavailable"' in response.get_data(as_text=True)
    assert snapshot_key(PREFIX, generation) in caplog.text


def test_reader_reports_garbage_pointer_as_unavailable(settings, memcached, client, caplog):
    raw_client(settings).set(pointer_key(PREFIX), b"[]")

    with caplog.at_level(logging.WARNING, logger="app.reader"):
        assert page_state(client) == "unavailable"
    assert pointer_key(PREFIX) in caplog.text


def test_reader_costs_one_get_per_request_when_generation_unchanged(published, client, memcached):
    client.get("/")
    before = memcached_stats(memcached.address)["cmd_get"]
    for _index in range(20):
        client.get("/")

    assert memcached_stats(memcached.address)["cmd_get"] - before == 20


def test_page_is_unavailable_within_bound_when_memcached_hangs_and_recovers(settings):
    server = MemcachedProcess().start()
    try:
        app = create_app(dataclasses.replace(settings, memcached_servers=(server.address,)))
        web = app.test_client()
        assert page_state(web) == "warming"
        server.pause()
        for _attempt in range(3):
            started = time.monotonic()
            assert page_state(web) == "unavailable"
            assert time.monotonic() - started < 0.5
        server.resume()
        assert page_state(web) == "warming"
        server.stop()
        started = time.monotonic()
        assert page_state(web) == "unavailable"
        assert time.monotonic() - started < 0.5
    finally:
        server.stop()


def test_warm_run_exits_1_when_memcached_unreachable_and_keeps_database(settings, stub):
    add_members(settings, "alice", "bob", "carol")
    answer_everyone(stub, T0)

    result = run_at(dataclasses.replace(settings, memcached_servers=("127.0.0.1:1",)), T0)

    assert result.exit_code == 1
    connection = members.connect(settings.database)
    known = {member.username: member.last_track for member in members.list_members(connection)}
    connection.close()
    assert known["bob"] is not None and known["bob"].track == "Hoppípolla"


def test_second_run_on_same_host_exits_0_while_lock_held(published, settings, stub):
    lock = job.LocalLock(settings.lock_path)
    assert lock.acquire()
    try:
        result = run_at(settings, T0 + timedelta(minutes=5))
    finally:
        lock.release()

    assert (result.outcome, result.exit_code) == ("locked", 0)
    assert current_generation(settings) == published.generation


def test_second_host_exits_0_while_lease_held(published, settings, stub):
    raw_client(settings).add(lease_key(PREFIX), b"1", time=60)

    result = run_at(
        dataclasses.replace(settings, lock_file=settings.database.with_name("b.lock")), T0 + timedelta(minutes=5)
    )

    assert (result.outcome, result.exit_code) == ("leased", 0)
    assert current_generation(settings) == published.generation


def test_run_releases_its_lease(published, settings):
    assert raw_client(settings).get(lease_key(PREFIX)) is None


def test_web_app_never_imports_write_side_modules(tmp_path):
    code = (
        "import sys\n"
        "from app import create_app\n"
        "from app.core.settings import Settings\n"
        "app = create_app(Settings(memcached_servers=('127.0.0.1:1',)))\n"
        "client = app.test_client()\n"
        "for path in ('/', '/api/internal/user-listens', '/healthz', '/metrics', '/missing'):\n"
        "    client.get(path)\n"
        "print(sorted(name for name in sys.modules if name == 'app' or name.startswith(('app.', 'devtools'))))\n"
    )
    output = run_python(code, REPO)

    assert output.returncode == 0, output.stderr
    loaded = ast.literal_eval(output.stdout.strip())
    # By package, so a warm-side module added later is covered too.
    assert [name for name in loaded if name.startswith(("app.warm", "devtools"))] == [], loaded
    assert {"app.web.views", "app.web.reader", "app.core.cache"} <= set(loaded), loaded

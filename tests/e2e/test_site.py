"""The whole site as deployed: gunicorn, memcached, the warm script and the fake Last.fm, as real processes."""

from __future__ import annotations

import json
import re
import signal
import time

import pytest
import requests

from app.core.snapshot import legacy_keys
from tests.support import TEST_API_KEY
from tests.support import Gunicorn
from tests.support import wait_until
from tests.support.memcached import WRITE_COUNTERS
from tests.support.memcached import cache_set
from tests.support.memcached import memcached_stats
from tests.support.stack import stack_fixture
from tests.support.warmlog import summary_of

MEMBERS = ("alice", "bob", "carol", "dave", "erin")


# memcached + fake Last.fm + gunicorn, with members in a fresh database.
stack = stack_fixture("site", members=MEMBERS)


@pytest.fixture
def site(stack):
    stack.reset()
    yield stack
    stack.stop_runs()


def pointer_generation(site) -> int | None:
    pointer = site.pointer()
    return pointer.generation if pointer is not None else None


def test_warm_script_publishes_what_the_page_shows(site):
    run = site.warm()

    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    summary = summary_of(lines)
    assert lines and all(re.match(r"^level=\w+ logger=\S+ generation=\d+ ", line) for line in lines), lines
    assert (summary["outcome"], summary["members"], summary["fetched"]) == ("published", "5", "5")
    data = site.api()
    assert data["state"] == "fresh" and data["version"] == 2
    assert sorted(item["username"] for item in data["data"]) == sorted(MEMBERS)
    flags = [item["nowPlaying"] for item in data["data"]]
    assert flags == sorted(flags, reverse=True)
    played = [item["playedAt"] for item in data["data"] if not item["nowPlaying"]]
    assert played == sorted(played, reverse=True)
    page = requests.get(site.web.url + "/", timeout=5)
    assert page.status_code == 200 and 'data-state="fresh"' in page.text
    for item in data["data"]:
        assert f"https://www.last.fm/user/{item['lastfmUsername']}" in page.text
    assert "Last updated" in page.text


def test_page_is_warming_before_first_run(site):
    page = requests.get(site.web.url + "/", timeout=5)

    assert page.status_code == 200 and 'data-state="warming"' in page.text
    assert requests.get(site.web.url + "/healthz", timeout=5).json()["state"] == "warming"


def test_healthz_reports_reachable_state_and_age(site):
    site.warm_ok()

    health = requests.get(site.web.url + "/healthz", timeout=5)

    assert health.status_code == 200
    body = health.json()
    assert body["memcached"] == "reachable" and body["state"] == "fresh"
    assert isinstance(body["snapshotAgeSeconds"], int) and body["generation"] == pointer_generation(site)


def test_page_and_api_requests_leave_write_counters_unchanged(site):
    site.warm_ok()
    before = memcached_stats(site.cache.address)
    with requests.Session() as session:
        for _index in range(250):
            assert session.get(site.web.url + "/", timeout=5).status_code == 200
            assert session.get(site.web.url + "/api/internal/user-listens", timeout=5).status_code == 200
    after = memcached_stats(site.cache.address)

    assert {name: after[name] - before[name] for name in WRITE_COUNTERS} == {name: 0 for name in WRITE_COUNTERS}


def test_old_format_writer_does_not_change_the_page(site):
    site.warm_ok()
    before = site.api()
    for key in legacy_keys("user-listens"):
        cache_set(site.cache.address, key, b"[]")

    assert site.api() == before


@pytest.mark.parametrize("step", ["fetched", "snapshot-written", "read-back", "pointer-read"])
def test_run_killed_before_pointer_swap_leaves_previous_snapshot_served(step, site):
    site.warm_ok()
    before = site.api()

    killed = site.killed_at(step)

    assert killed.returncode == -signal.SIGKILL
    assert site.api() == before
    site.warm_ok()
    assert site.api()["generation"] > before["generation"]


def test_run_killed_after_pointer_swap_serves_new_snapshot(site):
    site.warm_ok()
    before = site.api()

    killed = site.killed_at("pointer-swapped")

    assert killed.returncode == -signal.SIGKILL
    after = site.api()
    assert after["generation"] > before["generation"] and after["state"] == "fresh"
    assert site.warm().returncode == 0


def test_lastfm_down_for_everyone_exits_1_and_page_keeps_tracks(site):
    site.warm_ok()
    before = site.api()
    site.lastfm.control("all", {"mode": "http", "status": 503})

    run = site.warm()

    assert run.returncode == 1
    summary = summary_of(run.stderr)
    assert (summary["fetched"], summary["failed"]) == ("0", "5")
    assert site.api()["data"] == before["data"]


def test_member_gone_private_on_lastfm_disappears_on_next_run(site):
    site.warm_ok()
    site.lastfm.set_user("bob", mode="error", code=17, status=403, message="Login: User required to be logged in")

    summary = site.warm_ok()

    assert summary["dropped"] == "1"
    assert "bob" not in [item["username"] for item in site.api()["data"]]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"LISTENS_LASTFM_URL": "https://ws.audioscrobbler.com/2.0/", "LASTFM_API_KEY": ""},
            "LASTFM_API_KEY is not set",
        ),
        ({"LISTENS_CONCURRENCY": "many"}, "LISTENS_CONCURRENCY"),
        ({"LISTENS_MEMCACHED": "localhost"}, "LISTENS_MEMCACHED"),
    ],
)
def test_warm_script_exits_2_on_bad_configuration(env, message, site):
    run = site.warm(**env)

    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("level=ERROR")]
    assert len(errors) == 1 and message in errors[0]
    assert site.lastfm.stats()["requests"] == 0


def test_invalid_api_key_aborts_run_with_exit_2(site):
    site.warm_ok()
    before = site.api()

    run = site.warm(LASTFM_API_KEY="invalid")

    assert run.returncode == 2
    assert site.api()["generation"] == before["generation"]
    assert summary_of(run.stderr)["outcome"] == "config" and "LASTFM_API_KEY" in run.stderr


def test_api_key_never_appears_in_output(site):
    site.lastfm.set_user("carol", mode="http", status=500)
    run = site.warm()
    pages = requests.get(site.web.url + "/", timeout=5).text + json.dumps(site.api())

    assert TEST_API_KEY not in run.stdout + run.stderr + pages
    assert TEST_API_KEY not in (site.folder / "gunicorn.log").read_text()


def test_page_is_unavailable_quickly_when_memcached_is_down(site, tmp_path):
    dead = {**site.env, "LISTENS_MEMCACHED": "127.0.0.1:1"}
    web = Gunicorn(dead).start(tmp_path / "gunicorn.log")
    try:
        for _attempt in range(5):
            started = time.monotonic()
            page = requests.get(web.url + "/", timeout=5)
            assert time.monotonic() - started < 0.5
            assert page.status_code == 200 and 'data-state="unavailable"' in page.text
        assert requests.get(web.url + "/healthz", timeout=5).status_code == 503
    finally:
        web.stop()


def test_security_headers_on_every_page(site):
    site.warm_ok()
    for path in ("/", "/api/internal/user-listens", "/missing"):
        response = requests.get(site.web.url + path, timeout=5)
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert re.match(r"^(strict-origin|no-referrer)", response.headers["Referrer-Policy"])


def test_page_follows_a_publish_within_the_recheck_interval(site, tmp_path):
    site.warm_ok()
    old = pointer_generation(site)
    web = Gunicorn({**site.env, "LISTENS_POINTER_RECHECK_SECONDS": "0.5"}).start(tmp_path / "gunicorn.log")
    try:
        site.warm_ok()
        new = pointer_generation(site)
        seen = []

        def caught_up():
            batch = [
                requests.get(f"{web.url}/api/internal/user-listens", timeout=5).json()["generation"] for _ in range(10)
            ]
            seen.extend(batch)
            return batch == [new] * 10

        # Each worker re-checks the pointer at most every 0.5 s: both follow within a few.
        wait_until(caught_up, 5, "both workers to show the new generation")
    finally:
        web.stop()

    assert new > old and set(seen) <= {old, new}

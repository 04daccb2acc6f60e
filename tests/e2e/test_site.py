"""The whole site as deployed: gunicorn, memcached, the warm script and the fake Last.fm, as real processes."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest
import requests

from app.core.snapshot import decode_pointer
from app.core.snapshot import legacy_keys
from app.core.snapshot import pointer_key
from tests.support import REPO
from tests.support import TEST_API_KEY
from tests.support import FakeLastfm
from tests.support import Gunicorn
from tests.support import MemcachedProcess
from tests.support import add_members
from tests.support import memcached_command
from tests.support import memcached_stats
from tests.support import run_warm
from tests.support import service_env
from tests.support import stack_env
from tests.support import wait_until

pytestmark = pytest.mark.e2e

MEMBERS = ("alice", "bob", "carol", "dave", "erin")
WRITE_COUNTERS = (
    "cmd_set",
    "cmd_touch",
    "cmd_flush",
    "delete_hits",
    "delete_misses",
    "cas_hits",
    "cas_misses",
    "cas_badval",
    "incr_hits",
    "decr_hits",
)

# Runs job.run in a child process and SIGKILLs it at one protocol step.
KILL_AT_STEP = """
import os, signal, sys
from app.warm import job
from app.core.settings import load_settings
step = sys.argv[1]
def checkpoint(name):
    if name == step:
        os.kill(os.getpid(), signal.SIGKILL)
result = job.run(load_settings(), checkpoint=checkpoint)
sys.exit(result.exit_code)
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """memcached + fake Last.fm + gunicorn, with members in a fresh database."""
    folder = tmp_path_factory.mktemp("site")
    cache = MemcachedProcess().start()
    lastfm = FakeLastfm().start()
    env = stack_env(cache.address, lastfm.url, folder / "listens.sqlite3")
    add_members(folder / "listens.sqlite3", MEMBERS)
    web = Gunicorn(env).start(folder / "gunicorn.log")
    yield {"cache": cache, "lastfm": lastfm, "web": web, "env": env, "folder": folder}
    web.stop()
    lastfm.stop()
    cache.stop()


@pytest.fixture
def site(stack):
    stack["cache"].flush()
    stack["lastfm"].control("reset")
    return stack


def warm_ok(site) -> subprocess.CompletedProcess:
    run = run_warm(site["env"])
    assert run.returncode == 0, run.stderr
    return run


def get_api(site) -> dict:
    response = requests.get(f"{site['web'].url}/api/internal/user-listens", timeout=5)
    assert response.status_code == 200
    return response.json()


def pointer_generation(site) -> int | None:
    reply = memcached_command(f"get {pointer_key('user-listens')}", site["cache"].address)
    lines = reply.split("\r\n")
    return decode_pointer(lines[1].encode()).generation if len(lines) > 2 and lines[0].startswith("VALUE") else None


def test_warm_script_publishes_what_the_page_shows(site):
    run = warm_ok(site)

    lines = run.stderr.splitlines()
    summary = [line for line in lines if "warm outcome=" in line]
    assert len(summary) == 1
    assert lines and all(re.match(r"^level=\w+ logger=\S+ generation=\d+ ", line) for line in lines), lines
    assert "outcome=published" in summary[0] and "members=5" in summary[0] and "fetched=5" in summary[0]
    data = get_api(site)
    assert data["state"] == "fresh" and data["version"] == 2
    assert sorted(item["username"] for item in data["data"]) == sorted(MEMBERS)
    flags = [item["nowPlaying"] for item in data["data"]]
    assert flags == sorted(flags, reverse=True)
    played = [item["playedAt"] for item in data["data"] if not item["nowPlaying"]]
    assert played == sorted(played, reverse=True)
    page = requests.get(site["web"].url + "/", timeout=5)
    assert page.status_code == 200 and 'data-state="fresh"' in page.text
    for item in data["data"]:
        assert f"https://www.last.fm/user/{item['lastfmUsername']}" in page.text
    assert "Last updated" in page.text


def test_page_is_warming_before_first_run(site):
    page = requests.get(site["web"].url + "/", timeout=5)

    assert page.status_code == 200 and 'data-state="warming"' in page.text
    assert requests.get(site["web"].url + "/healthz", timeout=5).json()["state"] == "warming"


def test_healthz_reports_reachable_state_and_age(site):
    warm_ok(site)

    health = requests.get(site["web"].url + "/healthz", timeout=5)

    assert health.status_code == 200
    body = health.json()
    assert body["memcached"] == "reachable" and body["state"] == "fresh"
    assert isinstance(body["snapshotAgeSeconds"], int) and body["generation"] == pointer_generation(site)


def test_page_and_api_requests_leave_write_counters_unchanged(site):
    warm_ok(site)
    before = memcached_stats(site["cache"].address)
    with requests.Session() as session:
        for _index in range(250):
            assert session.get(site["web"].url + "/", timeout=5).status_code == 200
            assert session.get(site["web"].url + "/api/internal/user-listens", timeout=5).status_code == 200
    after = memcached_stats(site["cache"].address)

    assert {name: after[name] - before[name] for name in WRITE_COUNTERS} == {name: 0 for name in WRITE_COUNTERS}


def test_old_format_writer_does_not_change_the_page(site):
    warm_ok(site)
    before = get_api(site)
    for key in legacy_keys("user-listens"):
        assert memcached_command(f"set {key} 0 0 2\r\n[]", site["cache"].address).startswith("STORED")

    assert get_api(site) == before


@pytest.mark.parametrize("step", ["fetched", "snapshot-written", "read-back", "pointer-read"])
def test_run_killed_before_pointer_swap_leaves_previous_snapshot_served(step, site):
    warm_ok(site)
    before = get_api(site)

    killed = subprocess.run(
        [sys.executable, "-c", KILL_AT_STEP, step],
        cwd=REPO,
        env=service_env(site["env"]),
        capture_output=True,
        timeout=60,
    )

    assert killed.returncode == -signal.SIGKILL
    assert get_api(site) == before
    after_restart = run_warm(site["env"])
    assert after_restart.returncode == 0, after_restart.stderr
    assert "outcome=published" in after_restart.stderr
    assert get_api(site)["generation"] > before["generation"]


def test_run_killed_after_pointer_swap_serves_new_snapshot(site):
    warm_ok(site)
    before = get_api(site)

    killed = subprocess.run(
        [sys.executable, "-c", KILL_AT_STEP, "pointer-swapped"],
        cwd=REPO,
        env=service_env(site["env"]),
        capture_output=True,
        timeout=60,
    )

    assert killed.returncode == -signal.SIGKILL
    after = get_api(site)
    assert after["generation"] > before["generation"] and after["state"] == "fresh"
    assert run_warm(site["env"]).returncode == 0


def test_lastfm_down_for_everyone_exits_1_and_page_keeps_tracks(site):
    warm_ok(site)
    before = get_api(site)
    site["lastfm"].control("all", {"mode": "http", "status": 503})

    run = run_warm(site["env"])

    assert run.returncode == 1
    assert "fetched=0" in run.stderr and "failed=5" in run.stderr
    assert get_api(site)["data"] == before["data"]


def test_member_gone_private_on_lastfm_disappears_on_next_run(site):
    warm_ok(site)
    site["lastfm"].set_user("bob", mode="error", code=17, status=403, message="Login: User required to be logged in")

    run = warm_ok(site)

    assert "dropped=1" in run.stderr
    assert "bob" not in [item["username"] for item in get_api(site)["data"]]


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
    run = run_warm({**site["env"], **env})

    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("level=ERROR")]
    assert len(errors) == 1 and message in errors[0]
    assert site["lastfm"].stats()["requests"] == 0


def test_invalid_api_key_aborts_run_with_exit_2(site):
    warm_ok(site)
    before = get_api(site)

    run = run_warm({**site["env"], "LASTFM_API_KEY": "invalid"})

    assert run.returncode == 2
    assert get_api(site)["generation"] == before["generation"]
    assert "outcome=config" in run.stderr and "LASTFM_API_KEY" in run.stderr


def test_api_key_never_appears_in_output(site):
    site["lastfm"].set_user("carol", mode="http", status=500)
    run = run_warm(site["env"])
    pages = requests.get(site["web"].url + "/", timeout=5).text + json.dumps(get_api(site))

    assert TEST_API_KEY not in run.stdout + run.stderr + pages
    assert TEST_API_KEY not in (site["folder"] / "gunicorn.log").read_text()


def test_page_is_unavailable_quickly_when_memcached_is_down(site, tmp_path):
    dead = {**site["env"], "LISTENS_MEMCACHED": "127.0.0.1:1"}
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
    warm_ok(site)
    for path in ("/", "/api/internal/user-listens", "/missing"):
        response = requests.get(site["web"].url + path, timeout=5)
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert re.match(r"^(strict-origin|no-referrer)", response.headers["Referrer-Policy"])


def test_page_follows_a_publish_within_the_recheck_interval(site, tmp_path):
    warm_ok(site)
    old = pointer_generation(site)
    web = Gunicorn({**site["env"], "LISTENS_POINTER_RECHECK_SECONDS": "0.5"}).start(tmp_path / "gunicorn.log")
    try:
        warm_ok(site)
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

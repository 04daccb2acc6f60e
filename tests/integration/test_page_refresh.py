"""What the page's live refresh relies on: the section fragment, the refresh setting, and the page's weight."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC
from datetime import datetime
from datetime import timedelta

import pytest

from app import create_app
from app.core import cache
from app.core.snapshot import Snapshot
from app.core.snapshot import Track
from app.core.snapshot import generation_from
from app.warm.publisher import publish_snapshot
from tests.support import REPO
from tests.support.clock import FakeClock
from tests.support.tracks import make_track

PAGE_BUDGET = 30 * 1024
LONG_PAGE_BUDGET = 40 * 1024
CSS_BUDGET = 15 * 1024
SCRIPT_BUDGET = 6 * 1024
FRAGMENT = "/fragment/listens"
SECTION = re.compile(r'<section class="listens".*?</section>', re.DOTALL)


def make_tracks(count: int, now: datetime, track_chars: int = 20) -> tuple[Track, ...]:
    """count members' tracks, two now playing, with Last.fm-shaped links and covers."""
    tracks = []
    for index in range(count):
        name = f"member{index:02d}"
        tracks.append(
            make_track(
                name,
                lastfm_username=name,
                artist=f"Artist number {index}",
                album=f"Album number {index}",
                track=f"Track {index} ".ljust(track_chars, "x"),
                url=f"https://www.last.fm/music/Artist+number+{index}/_/Track+{index}",
                image=f"https://lastfm.freetls.fastly.net/i/u/300x300/{index:032x}.png",
                played_at=None if index < 2 else now - timedelta(minutes=index),
                now_playing=index < 2,
                fetched_at=now,
            )
        )
    return tuple(tracks)


def publish(settings, tracks: tuple[Track, ...], now: datetime) -> int:
    snapshot = Snapshot(generation=generation_from(now), last_updated=now, tracks=tracks, stats={})
    client = cache.connect(settings.memcached_servers, timeout_ms=cache.WRITER_TIMEOUT_MS)
    publish_snapshot(client, settings.key_prefix, snapshot, expiry_s=settings.max_stale_s)
    return snapshot.generation


@pytest.mark.parametrize("state", ["fresh", "warming", "unavailable"])
def test_fragment_is_the_pages_section_byte_for_byte(state, settings, memcached):
    clock = FakeClock()
    if state == "fresh":
        publish(settings, make_tracks(8, clock.now()), clock.now())
    elif state == "unavailable":
        settings = dataclasses.replace(settings, memcached_servers=("127.0.0.1:1",))
    # One "now" for both answers: the same relative times and the same data-now.
    client = create_app(settings, clock=clock.now).test_client()

    page = client.get("/").get_data(as_text=True)
    fragment = client.get(FRAGMENT).get_data(as_text=True)

    assert f'data-state="{state}"' in fragment
    assert fragment == SECTION.search(page).group(0)
    assert fragment.startswith("<section") and fragment.endswith("</section>")


def test_fragment_is_cached_like_the_page_with_its_security_headers(settings, memcached, client):
    generation = publish(settings, make_tracks(3, datetime.now(UTC)), datetime.now(UTC))

    fragment = client.get(FRAGMENT)
    again = client.get(FRAGMENT, headers={"If-None-Match": fragment.headers["ETag"]})
    page = client.get("/")

    assert fragment.status_code == 200 and fragment.mimetype == "text/html"
    assert f'data-generation="{generation}"' in fragment.get_data(as_text=True)
    assert again.status_code == 304 and again.data == b""
    assert fragment.headers["Cache-Control"] == page.headers["Cache-Control"]
    assert fragment.headers["Content-Security-Policy"] == page.headers["Content-Security-Policy"]
    policy = fragment.headers["Content-Security-Policy"]
    assert "connect-src 'self'" in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy


def test_page_carries_the_refresh_interval_and_its_script(settings, memcached, client):
    page = client.get("/").get_data(as_text=True)

    assert 'data-refresh="60"' in page
    assert re.search(r'<script src="/static/refresh\.js\?v=[0-9a-f]{12}" defer></script>', page)


def test_page_has_no_refresh_script_when_refresh_is_off(settings, memcached):
    client = create_app(dataclasses.replace(settings, refresh_s=0)).test_client()

    page = client.get("/").get_data(as_text=True)

    assert 'data-refresh="0"' in page and "refresh.js" not in page
    assert "relative-time.js" in page


@pytest.mark.parametrize(
    ("items", "track_chars", "budget"),
    [(8, 20, PAGE_BUDGET), (8, 300, PAGE_BUDGET), (50, 20, LONG_PAGE_BUDGET), (50, 300, LONG_PAGE_BUDGET)],
)
def test_page_stays_within_its_budget(items, track_chars, budget, settings, memcached):
    now = datetime.now(UTC)
    publish(settings, make_tracks(items, now, track_chars), now)
    client = create_app(dataclasses.replace(settings, items=items)).test_client()

    page = client.get("/")

    assert len(re.findall(r"<li[ >]", page.get_data(as_text=True))) == items
    assert len(page.data) < budget, len(page.data)


def test_stylesheet_and_scripts_stay_within_their_budgets():
    static = REPO / "app" / "web" / "static"

    assert len((static / "style.css").read_bytes()) < CSS_BUDGET
    assert len((static / "refresh.js").read_bytes()) < SCRIPT_BUDGET
    assert len((static / "relative-time.js").read_bytes()) < SCRIPT_BUDGET

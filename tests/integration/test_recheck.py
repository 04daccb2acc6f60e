"""The web hot path: the pointer re-check interval, the rendered-page memo, ETag and 304."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import template_rendered

from app import create_app
from app.core.settings import load_settings
from app.warm import job
from app.web.reader import SnapshotReader
from tests.integration.test_protocol import T0
from tests.integration.test_protocol import three_members_answering
from tests.support.clock import FakeClock
from tests.support.memcached import memcached_stats


@pytest.fixture
def stub(stub, settings, memcached):
    """The mocked Last.fm answering for alice, bob, carol, who are members."""
    three_members_answering(settings, stub)
    return stub


def test_reader_reuses_pointer_within_recheck_interval_then_sees_new_generation(settings, memcached, stub):
    first = job.run(settings, now=T0)
    clock = FakeClock()
    reader = SnapshotReader(
        settings.memcached_servers, settings.key_prefix, settings.fresh_s, recheck_s=0.5, clock=clock.monotonic
    )
    assert reader.read(T0).generation == first.generation
    second = job.run(settings, now=T0 + timedelta(minutes=5))
    gets_before = memcached_stats(memcached.address)["cmd_get"]

    clock.advance(0.4)
    within = reader.read(T0 + timedelta(minutes=6))
    gets_within = memcached_stats(memcached.address)["cmd_get"] - gets_before
    clock.advance(0.2)
    after = reader.read(T0 + timedelta(minutes=6))

    assert within.generation == first.generation and gets_within == 0
    assert after.generation == second.generation


def test_reader_ages_a_reused_reading_with_now(settings, memcached, stub):
    job.run(settings, now=T0)
    reader = SnapshotReader(
        settings.memcached_servers, settings.key_prefix, settings.fresh_s, recheck_s=60, clock=FakeClock().monotonic
    )

    assert reader.read(T0).state.value == "fresh"
    assert reader.read(T0 + timedelta(seconds=settings.fresh_s + 1)).state.value == "stale"


def page_bodies(settings, minutes: tuple[int, ...]) -> tuple[list[set[bytes]], int]:
    """Ask for the page five times at each T0 + minute + 30 s; return the bodies seen each time and the renders."""
    clock = FakeClock(T0)
    client = create_app(settings, clock=clock.now).test_client()
    rendered = []

    def record(sender, template, context, **extra):
        rendered.append(template.name)

    bodies = []
    with template_rendered.connected_to(record, client.application):
        for minute in minutes:
            clock.advance_to(T0 + timedelta(minutes=minute, seconds=30))
            bodies.append({client.get("/").data for _ in range(5)})
    return bodies, rendered.count("home.html")


def test_page_is_rendered_once_while_generation_state_and_minute_stay(settings, memcached, stub):
    job.run(settings, now=T0)

    bodies, renders = page_bodies(settings, (0, 0, 0, 0))

    assert renders == 1 and len(set().union(*bodies)) == 1


def test_page_is_rendered_again_when_the_minute_turns(settings, memcached, stub):
    job.run(settings, now=T0)

    (first, second), renders = page_bodies(settings, (0, 1))

    assert renders == 2 and len(first) == len(second) == 1 and first != second


@pytest.mark.parametrize("path", ["/", "/api/internal/user-listens"])
def test_conditional_get_answers_304_until_the_generation_changes(path, settings, memcached, stub):
    first = job.run(settings, now=T0)
    client = create_app(settings).test_client()
    response = client.get(path)
    etag = response.headers["ETag"]

    again = client.get(path, headers={"If-None-Match": etag})
    job.run(settings, now=T0 + timedelta(minutes=5))
    changed = client.get(path, headers={"If-None-Match": etag})

    assert response.status_code == 200 and "Last-Modified" in response.headers
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == etag
    assert again.headers["Cache-Control"] == response.headers["Cache-Control"]
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert first.generation is not None


def test_cache_control_lets_browsers_and_proxies_reuse_briefly(settings, memcached, stub):
    job.run(settings, now=T0)
    client = create_app(settings).test_client()

    for path in ("/", "/api/internal/user-listens"):
        control = client.get(path).headers["Cache-Control"]
        assert "public" in control and "max-age=" in control and "stale-while-revalidate=" in control
    assert client.get("/healthz").headers["Cache-Control"] == "no-store"


def test_default_settings_recheck_pointer_at_most_every_half_second():
    assert load_settings({}).pointer_recheck_s == 0.5
    assert load_settings({"LISTENS_POINTER_RECHECK_SECONDS": "0"}).pointer_recheck_s == 0

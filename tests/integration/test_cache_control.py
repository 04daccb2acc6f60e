"""What the page and the API tell shared caches, per state: recovery must show at once."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC
from datetime import datetime
from datetime import timedelta

import pytest

from app import create_app
from app.warm import job
from app.web.views import PUBLIC_CACHE
from app.web.views import SHORT_CACHE
from tests import support
from tests.support.lastfm_stub import recent_payload

PATHS = ("/", "/api/internal/user-listens")
NAMES = ("alice", "bob")


def max_age(control: str) -> int:
    return int(re.search(r"max-age=(\d+)", control).group(1))


def answers(client) -> dict[str, tuple[str, str]]:
    """Return each path's (state, Cache-Control), the state read from the API's JSON."""
    state = client.get("/api/internal/user-listens").get_json()["state"]
    return {path: (state, client.get(path).headers["Cache-Control"]) for path in PATHS}


def test_short_cache_is_a_few_seconds_and_shorter_than_public_cache():
    assert 0 < max_age(SHORT_CACHE) <= 5 < max_age(PUBLIC_CACHE)
    assert "stale-while-revalidate" not in SHORT_CACHE


def test_warming_and_unavailable_answers_are_cached_briefly(settings, memcached, client):
    dead = create_app(dataclasses.replace(settings, memcached_servers=("127.0.0.1:1",))).test_client()

    for client_in_state, state in ((client, "warming"), (dead, "unavailable")):
        for path, (shown, control) in answers(client_in_state).items():
            assert shown == state, path
            assert control == SHORT_CACHE, (state, path)


@pytest.mark.parametrize("state", ["fresh", "stale", "empty"])
def test_answers_with_a_snapshot_keep_the_public_cache(state, settings, memcached, stub, client):
    now = datetime.now(UTC)
    played = {"fresh": now, "stale": now - timedelta(hours=1), "empty": now}[state]
    support.add_members(settings.database, NAMES, now=now)
    for name in NAMES:
        if state == "empty":
            stub.answers[name] = {"recenttracks": {"track": [], "@attr": {"user": name}}}
        else:
            stub.answers[name] = recent_payload(name, "Low", "Words", played=played - timedelta(minutes=1))
    assert job.run(settings, now=played).exit_code == 0

    for path, (shown, control) in answers(client).items():
        assert shown == state, path
        assert control == PUBLIC_CACHE, (state, path)


def test_recovery_from_warming_changes_the_cache_policy(settings, memcached, stub, client):
    before = answers(client)
    now = datetime.now(UTC)
    support.add_members(settings.database, NAMES, now=now)
    for name in NAMES:
        stub.answers[name] = recent_payload(name, "Low", "Words", played=now - timedelta(minutes=1))
    job.run(settings, now=now)
    after = answers(client)

    assert {control for _, control in before.values()} == {SHORT_CACHE}
    assert {state for state, _ in after.values()} == {"fresh"}
    assert {control for _, control in after.values()} == {PUBLIC_CACHE}

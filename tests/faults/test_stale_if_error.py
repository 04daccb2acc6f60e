"""Stale-if-error against the real site: memcached stopped or hung while gunicorn workers hold a snapshot.

A worker that showed a list keeps showing it, as `stale` with a one-line
notice and `"reachable": false`, while /healthz answers 503; a worker
started after the outage has nothing to show and says `unavailable`. Every
answer comes within the read's bound.
"""

from __future__ import annotations

import pytest

from app.web.views import PUBLIC_CACHE
from app.web.views import SHORT_CACHE
from tests.faults.helpers import PageParser
from tests.faults.helpers import page_state
from tests.faults.helpers import timed_get
from tests.support import Gunicorn
from tests.support.stack import API_PATH

MEMBERS = ("alice", "bob", "carol")
BOUND_S = 0.5
REQUESTS = 6
NOTICE = "The list could not be refreshed"


def visible_text(page: str) -> str:
    return " ".join(" ".join(PageParser.parse(page).texts).split())


def answers(url: str) -> list[tuple[str, object, float]]:
    """Load /, the API and /healthz REQUESTS times each; return (path, response, seconds) of every one."""
    seen = []
    for _round in range(REQUESTS):
        for path in ("/", API_PATH, "/healthz"):
            response, seconds = timed_get(url + path)
            seen.append((path, response, seconds))
    return seen


@pytest.mark.parametrize("fault", ["stopped", "hung"])
def test_worker_keeps_showing_its_list_as_stale_while_memcached_is_down_and_a_new_worker_is_unavailable(
    fault, make_stack
):
    # One worker, so the worker that showed the list is the one asked afterwards.
    stack = make_stack(workers=1, members=MEMBERS)
    stack.warm_ok()
    before = stack.api()
    assert (before["state"], before["reachable"]) == ("fresh", True) and len(before["data"]) == len(MEMBERS)
    assert stack.get(API_PATH).headers["Cache-Control"] == PUBLIC_CACHE
    assert NOTICE not in visible_text(stack.page())

    with stack.cache_down(hung=fault == "hung"):
        seen = answers(stack.web.url)
        # A worker started after the outage holds nothing.
        later = Gunicorn(stack.env, workers=1).start(stack.folder / "later.log")
        try:
            seen_later = answers(later.url)
        finally:
            later.stop()

    slow = [(path, seconds) for path, _, seconds in seen + seen_later if seconds >= BOUND_S]
    assert not slow, slow
    for path, response, _ in seen:
        if path == API_PATH:
            data = response.json()
            assert (response.status_code, data["state"], data["reachable"]) == (200, "stale", False)
            assert (data["generation"], data["data"], data["lastUpdated"]) == (
                before["generation"],
                before["data"],
                before["lastUpdated"],
            )
            assert response.headers["Cache-Control"] == SHORT_CACHE
        elif path == "/":
            assert response.status_code == 200 and page_state(response.text) == "stale"
            text = visible_text(response.text)
            assert text.count(NOTICE) == 1 and "could not be refreshed: it was last updated just now" in text
            assert all(name in text for name in MEMBERS)
            assert response.headers["Cache-Control"] == SHORT_CACHE
        else:
            health = response.json()
            assert response.status_code == 503
            assert (health["memcached"], health["state"], health["generation"]) == (
                "unreachable",
                "stale",
                before["generation"],
            )
    for path, response, _ in seen_later:
        if path == "/healthz":
            assert response.status_code == 503 and response.json()["memcached"] == "unreachable"
            continue
        state = response.json()["state"] if path == API_PATH else page_state(response.text)
        assert state == "unavailable" and response.status_code == 200
        if path == API_PATH:
            assert response.json()["reachable"] is False and response.json()["data"] == []
        else:
            assert NOTICE not in visible_text(response.text)
        assert response.headers["Cache-Control"] == SHORT_CACHE

    # Recovery shows at once: the same list again once memcached answers
    # (hung), or, after a restart emptied it, the next warm run's list.
    if fault == "stopped":
        stack.warm_ok()
    after = stack.api()
    assert (after["state"], after["reachable"]) == ("fresh", True)
    assert after["generation"] >= before["generation"]
    assert stack.get("/healthz").status_code == 200
    assert stack.get(API_PATH).headers["Cache-Control"] == PUBLIC_CACHE
    assert NOTICE not in visible_text(stack.page())


def test_worker_shows_unavailable_once_its_list_is_older_than_the_stale_limit(make_stack):
    stack = make_stack(workers=1, env={"LISTENS_MAX_STALE_SECONDS": "60"}, members=MEMBERS)
    # A run two minutes ago: within the cache's expiry, past the stale limit of the outage.
    stack.paused("two-minutes-ago", now_offset_s=-120).finish()
    shown = stack.api()
    assert shown["reachable"] is True and shown["data"]

    stack.cache.pause()
    try:
        response, seconds = timed_get(stack.web.url + API_PATH)
    finally:
        stack.cache.resume()

    assert seconds < BOUND_S
    assert (response.json()["state"], response.json()["reachable"], response.json()["data"]) == (
        "unavailable",
        False,
        [],
    )

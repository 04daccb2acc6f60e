"""A pool of three under the read's deadline and the monotonic reader: hung servers, a rejoining server's old pointer.

Read (docs/design.md): one request spends at most 0.5 s on memcached however
many servers of the pool hang, and a worker never shows a generation older
than one it has shown, even when a server rejoins holding an old pointer.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from email.utils import parsedate_to_datetime

import pytest

from app import create_app
from app.core import cache
from app.core.snapshot import Snapshot
from app.core.snapshot import generation_from
from app.core.snapshot import pointer_key
from app.warm import job
from app.warm import publisher
from tests.ops.test_pool import PREFIX
from tests.ops.test_pool import READ_BOUND_S
from tests.ops.test_pool import add_members
from tests.ops.test_pool import holder
from tests.ops.test_pool import servers_of
from tests.support import timed
from tests.support import wait_until
from tests.support.stack import pointer_at
from tests.support.stack import snapshot_at
from tests.support.tracks import make_track

API = "/api/internal/user-listens"
REQUESTS = 4


def make_snapshot(generation: int, now: datetime) -> Snapshot:
    track = make_track("alice", track=f"Track {generation}", played_at=now, fetched_at=now)
    return Snapshot(generation, now, (track,), {"members": 1})


def publish(servers: tuple[str, ...], generation: int, now: datetime) -> None:
    # The warm job's client and timeouts, so this is also the warm job
    # publishing while two servers of three hang. With the reader's 150 ms,
    # libmemcached 1.0 can meet the key's second hung server while it is
    # still "disabled until timed retry" and not yet out of the ring, and
    # give up. With 1.1, RawClient routes around each hung server for longer
    # than the other servers' 2 s time-outs take (_note_timeout), or the key
    # would bounce between the two hung servers.
    client = cache.connect(servers, timeout_ms=cache.WRITER_TIMEOUT_MS)
    outcome = publisher.publish_snapshot(client, PREFIX, make_snapshot(generation, now), expiry_s=3600)
    assert outcome is publisher.PublishOutcome.PUBLISHED


def hung_sets(pool) -> list[list]:
    """Return the hung servers of each case: the pointer's holder first, then each other server with it, then all."""
    first = holder(pool, pointer_key(PREFIX))
    others = [server for server in pool if server is not first]
    return [[first], [first, others[0]], [first, others[1]], list(pool)]


@pytest.mark.parametrize("case", range(4), ids=["one", "two-a", "two-b", "three"])
def test_every_answer_within_bound_and_never_older_when_servers_of_three_hang(case, pool, settings):
    settings = dataclasses.replace(settings, memcached_servers=servers_of(pool))
    now = datetime.now(UTC)
    first = generation_from(now - timedelta(seconds=60))
    publish(settings.memcached_servers, first, now - timedelta(seconds=60))
    seen = create_app(settings).test_client()
    assert seen.get(API).get_json()["generation"] == first
    hung = hung_sets(pool)[case]

    for server in hung:
        server.pause()
    try:
        if len(hung) < len(pool):
            # The next run publishes onto the servers left; the snapshot and
            # the pointer may now hash to a hung server first.
            second = generation_from(now)
            publish(settings.memcached_servers, second, now)
        fresh_worker = create_app(settings).test_client()
        for web, shown in ((seen, first), (fresh_worker, None)):
            for _attempt in range(REQUESTS):
                for path in ("/", API, "/healthz"):
                    response, elapsed = timed(web.get, path)
                    assert elapsed < READ_BOUND_S, (path, elapsed, [server.address for server in hung])
                data = web.get(API).get_json()
                if data["reachable"]:
                    assert data["state"] == "fresh" and data["generation"] >= (shown or first)
                elif shown is not None:
                    # Stale-if-error: the list it showed, never an older one.
                    assert data["state"] == "stale" and data["generation"] >= shown
                else:
                    assert (data["state"], data["generation"]) == ("unavailable", None)
    finally:
        for server in hung:
            server.resume()


def test_no_worker_ever_shows_an_older_generation_when_a_server_rejoins_with_an_old_pointer(
    pool, lastfm, settings, caplog
):
    settings = dataclasses.replace(settings, memcached_servers=servers_of(pool), lastfm_url=lastfm.url)
    add_members(settings.database)
    # A minute ago, so the two runs' lists differ in their update time too.
    first = job.run(settings, now=datetime.now(UTC) - timedelta(seconds=60))
    assert (first.outcome, first.exit_code) == ("published", 0), first.summary()
    workers = [create_app(settings).test_client() for _ in range(2)]
    shown = {index: [web.get(API).get_json()["generation"]] for index, web in enumerate(workers)}
    # The page names no generation: the time its snapshot was updated stands for it.
    pages = {index: [parsedate_to_datetime(web.get("/").headers["Last-Modified"])] for index, web in enumerate(workers)}
    assert shown == {0: [first.generation], 1: [first.generation]}
    victim = holder(pool, pointer_key(PREFIX))

    # Cut off (hung, not restarted): it keeps the pointer and snapshot of the first run.
    victim.pause()
    try:
        second = job.run(settings)
        assert (second.outcome, second.exit_code) == ("published", 0), second.summary()
        for index, web in enumerate(workers):
            data = web.get(API).get_json()
            shown[index].append(data["generation"])
            if data["reachable"]:
                assert data["generation"] == second.generation
    finally:
        victim.resume()
    assert pointer_at(victim.address).generation == first.generation
    # The first run's snapshot is still in the pool: a reader following the old pointer could show it.
    assert any(snapshot_at(server.address, first.generation) is not None for server in pool)

    # Once each worker's client takes the rejoined server back into its ring
    # (within about two seconds), the pointer it reads names the first run.
    with caplog.at_level(logging.WARNING, logger="app.reader"):
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            for index, web in enumerate(workers):
                shown[index].append(web.get(API).get_json()["generation"])
                page = web.get("/")
                pages[index].append(parsedate_to_datetime(page.headers["Last-Modified"]))
            time.sleep(0.05)
    for index, generations in shown.items():
        assert generations == sorted(generations), (index, generations)
        assert generations[-1] == second.generation
        assert pages[index] == sorted(pages[index]) and pages[index][-1] > pages[index][0], pages[index]
    older = [record.getMessage() for record in caplog.records if "older than generation" in record.getMessage()]
    assert any(str(first.generation) in line and str(second.generation) in line for line in older), older

    # The next run finds the old pointer, says so, and moves it forward.
    with caplog.at_level(logging.WARNING, logger="app.warm"):
        third = job.run(settings)
    assert (third.outcome, third.exit_code) == ("published", 0), third.summary()
    behind = [record.getMessage() for record in caplog.records if record.name == "app.warm"]
    assert any(
        f"pointer at generation {first.generation} is older than generation {second.generation}" in line
        for line in behind
    ), behind
    assert pointer_at(victim.address).generation == third.generation
    assert all(web.get(API).get_json()["generation"] == third.generation for web in workers)


def test_client_starts_no_call_that_could_end_past_its_deadline_when_every_server_hangs(pool):
    client = cache.connect(servers_of(pool))
    assert client.set("key", b"value")
    for server in pool:
        server.pause()
    try:
        # Room for one timed-out call, not for the second one a miss is confirmed with.
        client.deadline = time.monotonic() + client.attempt_s * 1.5
        started = time.monotonic()
        with pytest.raises(cache.CacheUnavailableError) as raised:
            cache.confirmed_get(client, "key")
        elapsed = time.monotonic() - started
    finally:
        for server in pool:
            server.resume()

    assert isinstance(raised.value.__cause__, cache.ReadDeadlineError)
    assert elapsed < READ_BOUND_S
    # Without a deadline the same client reads the key again once the servers are back.
    client.deadline = None
    wait_until(lambda: cache.confirmed_get(client, "key") == b"value", 10, "the key read again")

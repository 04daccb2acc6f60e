"""The reader's memory of what it showed: never an older generation, the last list while memcached is down."""

from __future__ import annotations

import logging
from datetime import timedelta

from app.core import cache
from app.core.snapshot import Pointer
from app.core.snapshot import State
from app.core.snapshot import encode_pointer
from app.core.snapshot import pointer_key
from app.warm import publisher
from app.web.reader import SnapshotReader
from tests.model.protocol import BASE_TIME
from tests.model.protocol import make_snapshot
from tests.support import MemcachedProcess
from tests.support.clock import FakeClock

PREFIX = "memory"
FRESH_S = 420


def publish(address: str, generation: int) -> None:
    client = cache.connect((address,))
    outcome = publisher.publish_snapshot(client, PREFIX, make_snapshot(generation), expiry_s=3600)
    assert outcome is publisher.PublishOutcome.PUBLISHED


def test_reader_keeps_newer_generation_and_warns_once_when_pointer_goes_back(memcached, caplog):
    publish(memcached.address, 1000)
    publish(memcached.address, 2000)
    reader = SnapshotReader((memcached.address,), PREFIX, FRESH_S)
    now = BASE_TIME + timedelta(seconds=2010)
    assert reader.read(now).generation == 2000

    # What a server rejoining with old data would hold.
    cache.connect((memcached.address,)).set(pointer_key(PREFIX), encode_pointer(Pointer(1000, None)))
    with caplog.at_level(logging.WARNING, logger="app.reader"):
        readings = [reader.read(now + timedelta(seconds=index * 150)) for index in range(5)]

    assert [reading.generation for reading in readings] == [2000] * 5
    # Its state is computed as usual from its true age: fresh, then stale past the window.
    assert [reading.state for reading in readings] == [State.FRESH] * 3 + [State.STALE] * 2
    assert all(reading.reachable for reading in readings)
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1 and "1000" in warnings[0] and "2000" in warnings[0], warnings
    # A reader that never showed the newer one follows the pointer.
    assert SnapshotReader((memcached.address,), PREFIX, FRESH_S).read(now).generation == 1000


def test_reader_reused_within_recheck_keeps_last_list_then_unavailable_past_the_stale_limit():
    server = MemcachedProcess().start()
    try:
        publish(server.address, 1000)
        clock = FakeClock(monotonic_s=0.0)
        reader = SnapshotReader(
            (server.address,), PREFIX, FRESH_S, recheck_s=60, max_stale_s=3600, clock=clock.monotonic
        )
        shown_at = BASE_TIME + timedelta(seconds=1000)
        assert reader.read(shown_at).state is State.FRESH
        server.stop()

        clock.advance(61)
        down = reader.read(shown_at + timedelta(seconds=61))
        # Within the recheck interval the unreachable answer is reused, its age moving on with now.
        clock.advance(1)
        later = reader.read(shown_at + timedelta(seconds=1800))
        expired = reader.read(shown_at + timedelta(seconds=3601))
    finally:
        server.stop()

    assert (down.state, down.generation, down.reachable, round(down.age_s)) == (State.STALE, 1000, False, 61)
    assert (later.state, later.generation, later.reachable, round(later.age_s)) == (State.STALE, 1000, False, 1800)
    assert (expired.state, expired.snapshot, expired.reachable) == (State.UNAVAILABLE, None, False)

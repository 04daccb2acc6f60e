"""What bounds a read from a hung memcached: libmemcached's poll timeout, set in app.cache.

pylibmc passes its `_poll_timeout` behaviour to libmemcached's
MEMCACHED_BEHAVIOR_POLL_TIMEOUT without documenting it. libmemcached waits
for a reply in poll() for that long, whatever `receive_timeout` says: its
default of seconds would hold a web worker far past the 0.5 s in which a
hung cache must become the `unavailable` page. These tests pin that effect
against a real memcached stopped with SIGSTOP, so an upgrade that changes it
fails here.
"""

from __future__ import annotations

import time

import pylibmc
import pytest

from app.core import cache
from tests.support import MemcachedProcess

# The reader's bound: a dead or hung cache must turn into a page this fast.
UNAVAILABLE_WITHIN_S = 0.5
# A poll timeout well above that bound, to show which behaviour bounds the wait.
LONG_POLL_MS = 1500


@pytest.fixture
def hung():
    with MemcachedProcess() as server:
        yield server


def seconds_to_fail(client: cache.RawClient, server: MemcachedProcess) -> float:
    client.set("key", b"value")
    server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(cache.CacheUnavailableError):
            cache.confirmed_get(client, "key")
        return time.monotonic() - started
    finally:
        server.resume()


def test_libmemcached_default_poll_timeout_is_longer_than_the_reader_bound(hung):
    # behaviors={}: pylibmc 1.6.3 on Python 3.13 reports ignored errors for None.
    default_ms = pylibmc.Client([hung.address], behaviors={}).behaviors["_poll_timeout"]

    assert default_ms / 1000 > UNAVAILABLE_WITHIN_S
    assert cache.connect((hung.address,)).behaviors["_poll_timeout"] == cache.READER_TIMEOUT_MS


def test_a_read_from_a_hung_server_fails_within_the_reader_bound(hung):
    assert seconds_to_fail(cache.connect((hung.address,)), hung) < UNAVAILABLE_WITHIN_S


def test_the_poll_timeout_not_the_receive_timeout_bounds_the_wait(hung):
    client = cache.connect((hung.address,))
    client.behaviors = {"_poll_timeout": LONG_POLL_MS}

    assert client.behaviors["receive_timeout"] == cache.READER_TIMEOUT_MS * 1000
    assert seconds_to_fail(client, hung) >= LONG_POLL_MS / 1000 * 0.9

"""The one place memcached clients are built and read failures are named.

A pylibmc client is not thread-safe: build one per thread (or per process for
the warm job), never share one across threads or forks.
"""

from __future__ import annotations

import logging

import pylibmc

logger = logging.getLogger(__name__)

# Web reads must fail fast: a dead or hung memcached has to become the
# `unavailable` page well within 0.5 s. libmemcached takes milliseconds for the
# connect and poll timeouts and microseconds for the socket timeouts.
READER_TIMEOUT_MS = 150
# The warm job can afford to wait longer for a loaded server before it gives up.
WRITER_TIMEOUT_MS = 2000

_BASE_BEHAVIORS = {
    # gets/cas need CAS identifiers on every read (DESIGN §3 publish step 5).
    "cas": True,
    "tcp_nodelay": True,
    # Consistent hashing, so a pool losing one server only moves that server's keys.
    "ketama": True,
    # After a failure, a server is skipped for this many seconds instead of
    # costing every request a timeout; a reader also rebuilds its client on
    # any error, so recovery is immediate once the server answers again.
    "retry_timeout": 1,
    "dead_timeout": 1,
}


class CacheUnavailableError(Exception):
    """Raised when memcached cannot be reached, refuses, or does not answer in time."""


def connect(servers: tuple[str, ...], *, timeout_ms: int = READER_TIMEOUT_MS) -> pylibmc.Client:
    """Build a memcached client for servers with bounded timeouts on every step."""
    behaviors = dict(_BASE_BEHAVIORS)
    behaviors.update(
        {
            "connect_timeout": timeout_ms,
            "_poll_timeout": timeout_ms,
            "receive_timeout": timeout_ms * 1000,
            "send_timeout": timeout_ms * 1000,
        }
    )
    return RawClient(list(servers), binary=False, behaviors=behaviors)


def confirmed_get(client: pylibmc.Client, key: str) -> bytes | None:
    """Return the value of key, None only for a real miss; raise CacheUnavailableError otherwise.

    libmemcached reports a read that timed out (a hung server) as a plain
    miss. It does mark the server failed when that happens, so a miss is
    asked a second time: a healthy server answers the second get in
    microseconds, a failed one makes it raise at once. This is what keeps a
    dead cache from looking like `warming`.
    """
    try:
        value = client.get(key)
        if value is None:
            value = client.get(key)
    except pylibmc.Error as error:
        raise CacheUnavailableError(f"memcached get {key!r} failed: {error}") from error
    if value is not None and not isinstance(value, bytes):
        value = str(value).encode("utf-8")
    return value


class RawClient(pylibmc.Client):
    """A pylibmc client that stores and returns bytes only, whatever the flags.

    pylibmc unpickles a value stored with its pickle flag; any other writer
    of a key could then run code in our process. Values here are always raw
    bytes, and decoding is left to the snapshot module.
    """

    def serialize(self, value):
        if isinstance(value, str):
            value = value.encode("utf-8")
        if not isinstance(value, bytes):
            raise TypeError(f"only bytes are stored in memcached, not {type(value).__name__}")
        return value, 0

    def deserialize(self, data, flags):
        return data

"""The one place memcached clients are built and read failures are named.

A pylibmc client is not thread-safe: build one per thread (or per process for
the warm job), never share one across threads or forks.

With several servers (LISTENS_MEMCACHED=a:11211,b:11211,...) keys are spread
with consistent hashing, and a server that fails is ejected from the client's
hash ring for a moment, so its keys land on the servers that are left: the
page keeps working and the next warm run publishes onto the live servers,
without anybody editing the server list (deploy/README.md, "A memcached pool").
"""

from __future__ import annotations

import logging
import re
import time

import pylibmc

# Named as in every log line (logger=app.cache), whatever the module's place in the package.
logger = logging.getLogger("app.cache")

# Web reads must fail fast: a dead or hung memcached has to become the
# `unavailable` page well within 0.5 s. libmemcached takes milliseconds for the
# connect and poll timeouts and microseconds for the socket timeouts.
READER_TIMEOUT_MS = 150
# The warm job can afford to wait longer for a loaded server before it gives up.
WRITER_TIMEOUT_MS = 2000

_BASE_BEHAVIORS = {
    # gets/cas need CAS identifiers on every read (docs/design.md, Publish, step 5).
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

# Only for a pool of two or more servers; a single server keeps the behaviours
# above, where a failure simply raises. Observed with libmemcached 1.0.16,
# which pylibmc's wheel bundles (tests/ops/test_pool.py pins it down, and
# says what differs with the 1.1.x of Debian 12 and 13, which pylibmc is built
# against where it has no wheel, e.g. Python 3.13):
# - without these, a stopped server's keys stay on it: every get and every
#   write of those keys fails until it is back, so a warm run can never move
#   a pointer that hashed there;
# - remove_failed=1 (which turns on auto_eject with failure_limit=1) ejects a
#   server from the ring at its first failure: the call that met the failure
#   raises, the next raises "marked dead" while the ring is rebuilt, and from
#   then on the server's keys hash to the next live server;
# - dead_timeout (seconds, whole-second clock) is how long it stays out; then
#   it is tried again, so a server that comes back is used again within about
#   two seconds. dead_timeout=0 would leave it "marked dead" for good, its
#   keys failing forever, so it must stay above zero.
# With libmemcached 1.1.x, remove_failed leaves failure_limit at 5, so it is
# set here; a stopped server is then ejected at its third failed call (two
# connection failures, then "marked dead"). A hung server's time-outs never
# eject it there: RawClient routes around it itself (see _detour).
_POOL_BEHAVIORS = {
    "remove_failed": 1,
    "failure_limit": 1,
    "dead_timeout": 1,
}

# A call that timed out on one server of a pool: libmemcached 1.1.x raises
# this (error 31) and names the server; 1.0.16 returns a miss instead.
_TIMEOUT_ON_SERVER = re.compile(r"A TIMEOUT OCCURRED.*\bhost: (\S+?:\d+)\b")

# Errors about the request itself: another server would answer the same.
_REQUEST_ERRORS = (pylibmc.TooBig, pylibmc.BadKeyProvided, pylibmc.NotSupportedError, pylibmc.CacheMiss)

# A failover is logged at most this often per process, so a dead server does
# not write one line per web request.
FAILOVER_WARNING_INTERVAL_S = 60.0
_last_failover_warning = float("-inf")


class CacheUnavailableError(Exception):
    """Raised when memcached cannot be reached, refuses, or does not answer in time."""


class ReadDeadlineError(pylibmc.Error):
    """Raised instead of starting a call that could not finish before the client's deadline."""


def connect(servers: tuple[str, ...], *, timeout_ms: int = READER_TIMEOUT_MS) -> RawClient:
    """Build a memcached client for servers with bounded timeouts on every step."""
    behaviors = dict(_BASE_BEHAVIORS)
    if len(servers) > 1:
        behaviors.update(_POOL_BEHAVIORS)
    behaviors.update(
        {
            "connect_timeout": timeout_ms,
            # Undocumented in pylibmc: libmemcached's poll timeout, which is
            # what bounds a read from a hung server (tests/integration/test_cache_timeouts.py).
            "_poll_timeout": timeout_ms,
            "receive_timeout": timeout_ms * 1000,
            "send_timeout": timeout_ms * 1000,
        }
    )
    client = RawClient(list(servers), binary=False, behaviors=behaviors)
    client.attempt_s = timeout_ms / 1000
    return client


def confirmed_get(client: RawClient, key: str) -> bytes | None:
    """Return the value of key, None only for a real miss; raise CacheUnavailableError otherwise.

    The client already asks every miss twice (RawClient._read), so a hung
    server raises instead of passing for a miss. This is what keeps a dead
    cache from looking like `warming`. In a pool, a key whose server failed
    is read from the server it hashes to now: a value found there is shown,
    but a miss is not trusted while a server is out of the ring, since the
    key may well be on the missing one.
    """
    try:
        value = client.get(key)
    except pylibmc.Error as error:
        raise CacheUnavailableError(f"memcached get {key!r} failed: {error}") from error
    if value is None and client.recently_failed():
        raise CacheUnavailableError(
            f"memcached get {key!r} missed while a server of the pool is out after a failure;"
            " the key may be on that server"
        )
    return value


class RawClient(pylibmc.Client):
    """A pylibmc client that stores and returns bytes only, whatever the flags.

    pylibmc unpickles a value stored with its pickle flag; any other writer
    of a key could then run code in our process. Values here are always raw
    bytes, and decoding is left to the snapshot module.

    In a pool, a get, gets, set, add, cas or delete that a failed server
    breaks is made again, up to twice per server that may be down, so it
    reaches the live server the key hashes to once libmemcached has ejected
    the failed one. Making a call again is safe for what the protocol writes:
    a snapshot `add` stores the same bytes under a key no one else writes and
    is read back; a pointer `add` or `cas` that also reached the failed server
    is one more copy that the next run's CAS moves forward; and the lease only
    saves work, the pointer's CAS is what keeps two runs from going backwards.
    """

    def __init__(self, servers, *args, **kwargs) -> None:
        super().__init__(servers, *args, **kwargs)
        self._behaviors = kwargs.get("behaviors", {})
        # monotonic time of the last failed call, None if none
        self.failed_at: float | None = None
        # The ring ejects a dead server after two failed calls with libmemcached
        # 1.0.16 (the failure itself, then "marked dead" while it is rebuilt),
        # after three with 1.1.x (two connection failures, then "marked dead").
        self._attempts = 1 + 3 * (len(self.addresses) - 1)
        # Servers that timed out, each with the monotonic time until which
        # calls go around it, and the client over the others (_detour).
        self._hung: dict[str, float] = {}
        self._detour_client: RawClient | None = None
        # Read (docs/design.md): a web request sets a monotonic deadline for
        # its whole read (and when the read started), so however many servers
        # of the pool hang, no call is started that a hung server could
        # stretch past it. It applies once a call of this read has failed:
        # healthy servers answer in microseconds, and a busy host's slowness
        # must not turn a good read into a failure. None: no limit.
        self.deadline: float | None = None
        self.read_started = float("-inf")
        # How long one call may take on a hung server; connect() sets it from
        # the timeouts it gives libmemcached. (Reading self.behaviors here
        # instead would change how a new client treats a stopped server.)
        self.attempt_s = 1.0

    def recently_failed(self) -> bool:
        """Return True while a server that failed may still be out of this client's ring."""
        if self.failed_at is None or len(self.addresses) < 2:
            return False
        if self._detour() is not None:
            return True
        # dead_timeout counts whole seconds, so the ejection can last up to a
        # second longer than it says.
        return time.monotonic() - self.failed_at < _POOL_BEHAVIORS["dead_timeout"] + 1

    def _detour(self) -> RawClient | None:
        """Return a client over the pool minus the servers that timed out lately, None when there are none.

        libmemcached 1.1.x never ejects a server for timing out, so without
        this every call for a hung server's keys would cost a time-out and
        fail. A client built over the other servers hashes those keys where
        an ejection would have moved them (consistent hashing), so the warm
        job writes them and a reader finds them on the same live server.
        """
        if not self._hung:
            return None
        now = time.monotonic()
        live = {server: until for server, until in self._hung.items() if until > now}
        if live != self._hung:
            self._hung = live
            self._detour_client = None
        if not self._hung:
            return None
        if self._detour_client is None:
            others = [server for server in self.addresses if server not in self._hung]
            if not others:
                return None
            self._detour_client = RawClient(others, binary=False, behaviors=self._behaviors)
        return self._detour_client

    def _note_timeout(self, error: pylibmc.Error) -> None:
        match = _TIMEOUT_ON_SERVER.search(str(error))
        if match is not None and match.group(1) in self.addresses and len(self.addresses) > 1:
            if match.group(1) not in self._hung:
                # The detour client was built over the servers then left: rebuild it without this one.
                self._detour_client = None
            # Long enough to outlast the time-outs the other servers of the pool
            # may cost meanwhile: with the warm job's 2 s time-outs, a window of
            # dead_timeout alone would expire while the next hung server times
            # out, and the key would bounce between two hung servers.
            window_s = _POOL_BEHAVIORS["dead_timeout"] + self.attempt_s * (len(self.addresses) - 1)
            self._hung[match.group(1)] = time.monotonic() + window_s

    def _call(self, operation, key, *args, **kwargs):
        for attempt in range(1, self._attempts + 1):
            if (
                self.deadline is not None
                and self.failed_at is not None
                and self.failed_at >= self.read_started
                and time.monotonic() + self.attempt_s > self.deadline
            ):
                raise ReadDeadlineError(f"no time left before the read's deadline for {operation.__name__} {key!r}")
            detour = self._detour()
            try:
                if detour is not None:
                    return getattr(pylibmc.Client, operation.__name__)(detour, key, *args, **kwargs)
                return operation(key, *args, **kwargs)
            except _REQUEST_ERRORS:
                raise
            except pylibmc.Error as error:
                self.failed_at = time.monotonic()
                self._note_timeout(error)
                if attempt == self._attempts:
                    raise
                _warn_failover(operation.__name__, key, error, self.addresses)

    def _read(self, operation, key, *args, **kwargs):
        value = self._call(operation, key, *args, **kwargs)
        if value is None or value == (None, None):
            # libmemcached reports a read that timed out (a hung server) as a
            # plain miss, and marks the server failed. Asked again, a healthy
            # server answers the same in microseconds; a failed one raises at
            # once (one server) or is ejected so the call moves on to the live
            # server (a pool). So neither the page nor the warm job ever takes
            # a hung server's silence for "no pointer yet".
            value = self._call(operation, key, *args, **kwargs)
        return value

    def get(self, key, *args, **kwargs):
        return self._read(super().get, key, *args, **kwargs)

    def gets(self, key, *args, **kwargs):
        return self._read(super().gets, key, *args, **kwargs)

    def add(self, key, *args, **kwargs):
        return self._call(super().add, key, *args, **kwargs)

    def set(self, key, *args, **kwargs):
        return self._call(super().set, key, *args, **kwargs)

    def cas(self, key, *args, **kwargs):
        return self._call(super().cas, key, *args, **kwargs)

    def delete(self, key, *args, **kwargs):
        return self._call(super().delete, key, *args, **kwargs)

    def serialize(self, value):
        if isinstance(value, str):
            value = value.encode("utf-8")
        if not isinstance(value, bytes):
            raise TypeError(f"only bytes are stored in memcached, not {type(value).__name__}")
        return value, 0

    def deserialize(self, data, flags):
        return data


def _warn_failover(operation: str, key: str, error: Exception, servers: list[str]) -> None:
    global _last_failover_warning
    now = time.monotonic()
    if now - _last_failover_warning >= FAILOVER_WARNING_INTERVAL_S:
        _last_failover_warning = now
        logger.warning(
            "memcached %s %r failed (%s); trying the rest of the pool %s", operation, key, error, ",".join(servers)
        )

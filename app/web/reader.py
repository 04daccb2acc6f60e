"""The read-only snapshot reader used by the web process: it never writes to memcached.

Per request it reads the pointer, reuses the snapshot it already parsed for
that generation, or fetches and validates it, falling back to the previous
generation when the current one was evicted or is invalid (docs/design.md, Read).
It never shows a generation older than one it has shown, and while memcached
cannot be reached it keeps showing the last snapshot it had, as `stale`
(stale-if-error); with nothing in memory a cache failure is the `unavailable`
state. It never raises.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime

from app.core import cache
from app.core.snapshot import Pointer
from app.core.snapshot import Snapshot
from app.core.snapshot import SnapshotInvalidError
from app.core.snapshot import State
from app.core.snapshot import decode_pointer
from app.core.snapshot import decode_snapshot
from app.core.snapshot import pointer_key
from app.core.snapshot import snapshot_key

# Named as in every log line (logger=app.reader), whatever the module's place in the package.
logger = logging.getLogger("app.reader")

# The same broken key is reported again at most this often, so an invalid
# value under heavy traffic does not flood the log.
WARNING_INTERVAL_S = 60.0

# Read, step 1 (docs/design.md): a dead or hung cache is `unavailable` well within
# 0.5 s. A failed read costs at most about one client timeout
# (cache.READER_TIMEOUT_MS); a second read is tried only when the first failed
# within this, so two of them still fit in the bound.
RETRY_WITHIN_S = 0.2

# The whole read of one request, every call and retry on every server of the
# pool included, spends at most this long on memcached: no call is started
# that a hung server could stretch past it (cache.RawClient.deadline).
READ_BUDGET_S = 0.45

# The default of LISTENS_MAX_STALE_SECONDS: how old a snapshot held in memory
# may be and still be shown while memcached is unreachable.
MAX_STALE_S = 86400


@dataclasses.dataclass(frozen=True)
class Reading:
    """What one read found: the state, and the snapshot shown in it (if any)."""

    state: State
    snapshot: Snapshot | None = None
    age_s: float | None = None
    reachable: bool = True
    reason: str = ""

    @property
    def generation(self) -> int | None:
        return self.snapshot.generation if self.snapshot is not None else None


class SnapshotReader:
    """Read the current snapshot from memcached, one client per thread, memo per generation."""

    def __init__(
        self,
        servers: tuple[str, ...],
        prefix: str,
        fresh_s: int,
        *,
        recheck_s: float = 0.0,
        max_stale_s: int = MAX_STALE_S,
        connect: Callable[[tuple[str, ...]], object] = cache.connect,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._servers = servers
        self._prefix = prefix
        self._fresh_s = fresh_s
        self._recheck_s = recheck_s
        self._max_stale_s = max_stale_s
        self._connect = connect
        self._clock = clock
        # (clock() when memcached was last asked, what it said); replaced
        # whole, so threads never see half of it.
        self._last: tuple[float, Reading] | None = None
        self._local = threading.local()
        # generation -> parsed snapshot; at most the current and the previous.
        self._memo: dict[int, Snapshot] = {}
        # The newest snapshot this reader has shown: it never shows an older
        # one, and shows this one while memcached cannot be reached.
        self._newest: Snapshot | None = None
        self._newest_lock = threading.Lock()
        self._warned: dict[tuple[str, str], float] = {}

    def _client(self):
        local = self._local
        # A client must never cross a fork (gunicorn workers) or a thread.
        if getattr(local, "pid", None) != os.getpid() or local.client is None:
            local.client = self._connect(self._servers)
            local.pid = os.getpid()
        return local.client

    def _drop_client(self) -> None:
        # A fresh client reconnects at once, instead of waiting out
        # libmemcached's retry timeout on a server that has come back.
        self._local.client = None

    def _warn(self, key: str, reason: str, template: str = "invalid cache value under %s: %s; not shown") -> None:
        now = time.monotonic()
        if now - self._warned.get((key, reason), float("-inf")) >= WARNING_INTERVAL_S:
            self._warned[(key, reason)] = now
            logger.warning(template, key, reason)

    def read(self, now: datetime) -> Reading:
        """Return the state and snapshot to show at now (an aware datetime).

        Within recheck_s of the last time memcached was asked, its answer is
        reused without a round trip (only the state's age moves on with now):
        the page may trail a publish by that long, never show a mix of two.
        """
        last = self._last
        if last is not None and self._clock() - last[0] < self._recheck_s:
            return self._aged(last[1], now)
        checked_at = self._clock()
        reading = self._ask(now)
        self._last = (checked_at, reading)
        return reading

    def _aged(self, reading: Reading, now: datetime) -> Reading:
        if reading.snapshot is None:
            return reading
        if not reading.reachable:
            return self._unreachable(reading.snapshot, now, reading.reason)
        age_s = self._age_s(reading.snapshot, now)
        if self._state_for(reading.snapshot, age_s) is reading.state:
            # The same reading, its age as of the last check (at most
            # recheck_s behind): this is the hot path, one comparison.
            return reading
        return self._reading_for(reading.snapshot, now)

    @staticmethod
    def _age_s(snapshot: Snapshot, now: datetime) -> float:
        return max(0.0, (now - snapshot.last_updated).total_seconds())

    def _state_for(self, snapshot: Snapshot, age_s: float) -> State:
        if not snapshot.tracks:
            return State.EMPTY
        return State.FRESH if age_s <= self._fresh_s else State.STALE

    def _reading_for(self, snapshot: Snapshot, now: datetime) -> Reading:
        age_s = self._age_s(snapshot, now)
        return Reading(self._state_for(snapshot, age_s), snapshot, age_s)

    def _ask(self, now: datetime) -> Reading:
        started = time.monotonic()
        deadline = started + READ_BUDGET_S
        try:
            return self._read_by(deadline, now)
        except cache.CacheUnavailableError as error:
            self._drop_client()
            failure = error
        # Ask once more, on a new connection, while that still fits in the
        # bound: a connection kept from an earlier request fails at once after
        # a memcached restart although the server is back, and a server slowed
        # by a busy host can miss one timeout. A hung server fails twice.
        if time.monotonic() - started < RETRY_WITHIN_S:
            try:
                return self._read_by(deadline, now)
            except cache.CacheUnavailableError as error:
                self._drop_client()
                failure = error
        newest = self._newest
        shown = "the last snapshot it read" if newest is not None else "the unavailable state"
        self._warn(",".join(self._servers), str(failure), f"memcached %s unavailable: %s; showing {shown}")
        return self._unreachable(newest, now, "memcached unreachable")

    def _read_by(self, deadline: float, now: datetime) -> Reading:
        client = self._client()
        if isinstance(client, cache.RawClient):
            client.deadline = deadline
            client.read_started = deadline - READ_BUDGET_S
        try:
            return self._read(client, now)
        finally:
            if isinstance(client, cache.RawClient):
                client.deadline = None

    def _unreachable(self, snapshot: Snapshot | None, now: datetime, reason: str) -> Reading:
        """Return what to show while memcached cannot be reached: stale-if-error, within the stale limit."""
        if snapshot is not None:
            age_s = self._age_s(snapshot, now)
            if age_s <= self._max_stale_s:
                return Reading(State.STALE, snapshot, age_s, reachable=False, reason=reason)
        return Reading(State.UNAVAILABLE, reachable=False, reason=reason)

    def _monotonic(self, generation: int, snapshot: Snapshot | None = None) -> Snapshot:
        """Return snapshot (of generation), or the newer one already shown: a reader never goes back in time."""
        with self._newest_lock:
            # Compared and replaced under a lock: two threads must not put an older one back.
            newest = self._newest
            if newest is None or (snapshot is not None and generation > newest.generation):
                self._newest = snapshot
                return snapshot
        if generation < newest.generation:
            # A memcached server that rejoined with old data holds an old
            # pointer until the next warm run moves it forward.
            self._warn(
                pointer_key(self._prefix),
                f"names generation {generation}, older than generation {newest.generation} already shown",
                "pointer %s %s; still showing the newer one",
            )
        return newest

    def _read(self, client, now: datetime) -> Reading:
        key = pointer_key(self._prefix)
        raw_pointer = cache.confirmed_get(client, key)
        if raw_pointer is None:
            return Reading(State.WARMING, reason="no snapshot published yet")
        try:
            pointer = decode_pointer(raw_pointer)
        except SnapshotInvalidError as error:
            self._warn(key, str(error))
            return Reading(State.UNAVAILABLE, reason="invalid pointer")
        newest = self._newest
        if newest is not None and pointer.generation < newest.generation:
            # No need to fetch what would not be shown.
            return self._reading_for(self._monotonic(pointer.generation), now)
        snapshot, reason = self._snapshot_for(client, pointer)
        if snapshot is None:
            # Evicted data is restored by the next warm run; invalid data is not.
            state = State.WARMING if reason == "evicted" else State.UNAVAILABLE
            return Reading(state, reason=f"snapshot {reason}")
        return self._reading_for(self._monotonic(snapshot.generation, snapshot), now)

    def _snapshot_for(self, client, pointer: Pointer) -> tuple[Snapshot | None, str]:
        """Return the pointer's snapshot, else the previous generation's, with why neither was usable."""
        reason = "evicted"
        for generation in (pointer.generation, pointer.previous):
            if generation is None:
                break
            memo = self._memo.get(generation)
            if memo is None and self._newest is not None and self._newest.generation == generation:
                memo = self._newest
            if memo is not None:
                return memo, ""
            key = snapshot_key(self._prefix, generation)
            raw = cache.confirmed_get(client, key)
            if raw is None:
                continue
            try:
                snapshot = decode_snapshot(raw, generation)
            except SnapshotInvalidError as error:
                self._warn(key, str(error))
                reason = "invalid"
                continue
            self._remember(pointer, snapshot)
            return snapshot, ""
        return None, reason

    def _remember(self, pointer: Pointer, snapshot: Snapshot) -> None:
        keep = {pointer.generation, pointer.previous}
        memo = {generation: value for generation, value in self._memo.items() if generation in keep}
        memo[snapshot.generation] = snapshot
        # Replaced whole, so a thread reading it never sees a half-updated dict.
        self._memo = memo

"""The snapshot protocol as a model to check: warm runs stepped one protocol step at a time, a reader, the invariants.

A run is publisher.publish_snapshot in a greenlet: its checkpoint switches
back to the test, so the test decides exactly which run takes its next step
(a memcached call or two of the real code against a real memcached), and a
run that is never resumed has died at that step, as a SIGKILL would leave it.
Nothing here replaces the code under test: the runs, the reader and the
memcached are the real ones.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC
from datetime import datetime
from datetime import timedelta

import greenlet

from app.core import cache
from app.core.snapshot import Snapshot
from app.core.snapshot import SnapshotInvalidError
from app.core.snapshot import State
from app.core.snapshot import decode_pointer
from app.core.snapshot import decode_snapshot
from app.core.snapshot import pointer_key
from app.core.snapshot import snapshot_key
from app.warm import publisher
from app.web.reader import SnapshotReader
from tests.support.clock import FakeClock
from tests.support.tracks import make_track

PREFIX = "model"
EXPIRY_S = 3600
FRESH_S = 420
# Whole seconds: the snapshot format keeps timestamps to the second.
BASE_TIME = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def make_snapshot(generation: int) -> Snapshot:
    """Return the one snapshot of generation: its tracks name it, so a mix of two would show."""
    moment = BASE_TIME + timedelta(seconds=generation)
    tracks = tuple(
        make_track(
            f"member{index}",
            lastfm_username=f"member{index}",
            artist=f"Artist {generation}",
            album=f"Album {generation}",
            track=f"Track {generation}.{index}",
            url="",
            image="",
            played_at=moment,
            fetched_at=moment,
        )
        for index in range(3)
    )
    return Snapshot(generation, moment, tracks, {"members": 3})


class Clients:
    """One memcached client per role, kept across the thousands of schedules a check replays."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.reconnect()

    def reconnect(self) -> None:
        """Build every client anew (after a memcached restart: a client that met the dead server skips it a while)."""
        address = (self.address,)
        self.runs = [cache.connect(address, timeout_ms=cache.WRITER_TIMEOUT_MS) for _ in range(3)]
        self.checker = cache.connect(address)
        self.reader = cache.connect(address)
        self.fresh_reader = cache.connect(address)


class Run:
    """One publish of one generation, in a greenlet that stops after each protocol step."""

    def __init__(self, client, generation: int) -> None:
        self.generation = generation
        self.client = client
        self.greenlet = greenlet.greenlet(self._publish)
        self.steps: list[str] = []
        self.outcome: publisher.PublishOutcome | None = None
        self.error: publisher.PublishError | None = None
        self.dead = False

    def _publish(self) -> None:
        try:
            self.outcome = publisher.publish_snapshot(
                self.client, PREFIX, make_snapshot(self.generation), expiry_s=EXPIRY_S, checkpoint=self._checkpoint
            )
        except publisher.PublishError as error:
            self.error = error

    def _checkpoint(self, step: str) -> None:
        self.greenlet.parent.switch(step)

    @property
    def live(self) -> bool:
        return not self.dead and not self.greenlet.dead

    def step(self) -> str:
        """Run the next protocol step; return its checkpoint's name, or "done" when publish_snapshot returned."""
        assert self.live
        step = self.greenlet.switch()
        step = step if isinstance(step, str) else "done"
        self.steps.append(step)
        return step

    def kill(self) -> None:
        """Die here: never resumed, like a process killed at this step."""
        self.dead = True


@dataclasses.dataclass
class Cache:
    """What memcached holds under the protocol's keys, read directly."""

    pointer_generation: int | None
    pointer_previous: int | None
    pointer_valid: bool
    # The newest generation the pointer leads to that reads back whole, None if none.
    reachable: int | None


def inspect(client) -> Cache:
    """Read the pointer and the snapshots it names, and say which one a reader could show."""
    raw = client.get(pointer_key(PREFIX))
    if raw is None:
        return Cache(None, None, False, None)
    try:
        pointer = decode_pointer(raw)
    except SnapshotInvalidError:
        return Cache(None, None, False, None)
    reachable = None
    for generation in (pointer.generation, pointer.previous):
        if generation is None:
            continue
        data = client.get(snapshot_key(PREFIX, generation))
        if data is None:
            continue
        try:
            snapshot = decode_snapshot(data, generation)
        except SnapshotInvalidError:
            continue
        assert snapshot == make_snapshot(generation), f"snapshot {generation} reads back different"
        reachable = generation
        break
    return Cache(pointer.generation, pointer.previous, True, reachable)


class Checker:
    """The invariants, checked after every step against memcached and a reader that lives through all of them."""

    def __init__(self, clients: Clients) -> None:
        self.clients = clients
        self.reader = self.new_reader("reader")
        self.pointer_seen: int | None = None
        self.shown: list[int] = []
        self.checks = 0
        # Readers look a day after BASE_TIME: every generation the models
        # publish is at most 50,000 s after it, so every snapshot shown is stale.
        self.clock = FakeClock(BASE_TIME + timedelta(days=1))

    @property
    def client(self):
        return self.clients.checker

    def now(self) -> datetime:
        """Return the readers' "now", from the checker's clock."""
        return self.clock.now()

    def new_reader(self, role: str) -> SnapshotReader:
        """Return a reader that starts on the clients' role, and gets a new client whenever it drops one.

        Sharing one connection across thousands of replays keeps the test
        from exhausting connections; a client the reader dropped after an
        error is replaced, as the reader does in production.
        """
        connects = 0

        def connect(servers):
            nonlocal connects
            connects += 1
            if connects > 1:
                setattr(self.clients, role, cache.connect(servers))
            return getattr(self.clients, role)

        return SnapshotReader((self.clients.address,), PREFIX, FRESH_S, connect=connect)

    def after_protocol_step(self, where: str) -> None:
        """Check every invariant; where names the schedule so far, for the failure message."""
        state = inspect(self.client)
        # The pointer's generation never decreases.
        if state.pointer_generation is not None:
            assert self.pointer_seen is None or state.pointer_generation >= self.pointer_seen, (
                f"{where}: pointer moved back from {self.pointer_seen} to {state.pointer_generation}"
            )
            self.pointer_seen = state.pointer_generation
            # The pointer names a snapshot that reads back whole, or its previous one does.
            assert state.reachable is not None, f"{where}: pointer {state} leads to no whole snapshot"
        else:
            assert self.pointer_seen is None, f"{where}: pointer at {self.pointer_seen} is now missing or invalid"
        self.after_step(where, state)

    def after_step(self, where: str, state: Cache | None = None) -> None:
        """Check what readers show: never older, never a mix, never warming or empty when a snapshot is reachable."""
        if state is None:
            state = inspect(self.client)
        self.checks += 1
        for reader, history in ((self.reader, self.shown), (self.new_reader("fresh_reader"), [])):
            reading = reader.read(self.now())
            if reading.snapshot is not None:
                generation = reading.snapshot.generation
                assert reading.snapshot == make_snapshot(generation), f"{where}: a mix of snapshots shown"
                assert not history or generation >= max(history), (
                    f"{where}: reader showed {generation} after {max(history)}"
                )
                history.append(generation)
            if not reading.reachable:
                # memcached did not answer in time (a loaded host): stale-if-error, the newest it showed, or nothing.
                previous = history[:-1] if reading.snapshot is not None else history
                if previous:
                    assert (reading.state, reading.snapshot.generation) == (State.STALE, max(previous)), where
                else:
                    assert reading.state is State.UNAVAILABLE, where
            elif state.reachable is not None:
                assert reading.state is State.STALE, (
                    f"{where}: reader says {reading.state.value} while snapshot {state.reachable} is reachable"
                )
                # It shows the newest it can: what the pointer leads to, or a newer one it showed before.
                expected = max([state.reachable, *history[:-1]])
                assert reading.snapshot.generation == expected, (
                    f"{where}: reader shows {reading.snapshot.generation}, expected {expected}"
                )

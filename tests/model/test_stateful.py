"""The snapshot protocol under random schedules and random damage: a Hypothesis state machine against a real memcached.

Warm runs of newer and older generations start, step and die in any order,
readers read between any two steps, and the cache is damaged as production
damages it: keys evicted, garbage written under our keys, memcached
restarted (every key lost), an older pointer appearing (a server rejoining
a pool with old data). After every rule the invariants of
tests/model/protocol.py hold, the pointer ones counted from the last
damage. The examples are derandomised (a fixed seed), so a failure replays
exactly; the count is fixed too.
"""

from __future__ import annotations

import collections

import pytest
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine
from hypothesis.stateful import invariant
from hypothesis.stateful import precondition
from hypothesis.stateful import rule
from hypothesis.stateful import run_state_machine_as_test

from app.core.snapshot import Pointer
from app.core.snapshot import State
from app.core.snapshot import encode_pointer
from app.core.snapshot import encode_snapshot
from app.core.snapshot import pointer_key
from app.core.snapshot import snapshot_key
from tests.model.protocol import PREFIX
from tests.model.protocol import Checker
from tests.model.protocol import Clients
from tests.model.protocol import Run
from tests.model.protocol import inspect
from tests.model.protocol import make_snapshot
from tests.support import MemcachedProcess

EXAMPLES = 60
STEPS_PER_EXAMPLE = 40
MAX_LIVE_RUNS = 3
# A restart costs a process start; one per example is plenty.
MAX_RESTARTS = 1

GARBAGE = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"[]",
            b"{}",
            b'{"version": 1, "tracks": []}',
            b'{"generation": "soon", "previous": null}',
            # A whole, valid snapshot, under another generation's key: a mix if shown.
            encode_snapshot(make_snapshot(7)),
        ]
    ),
)


class ProtocolMachine(RuleBasedStateMachine):
    """Runs, reads and damage in any order; the invariants after every rule."""

    server: MemcachedProcess
    clients: Clients
    examples = 0
    rules_run = 0
    # How often each rule did something, for the closing line (and to show every kind of damage happened).
    tally: collections.Counter = collections.Counter()

    def __init__(self) -> None:
        super().__init__()
        type(self).examples += 1
        self.server.flush()
        self.checker = Checker(self.clients)
        self.runs: list[Run] = []
        self.newest = 10_000
        # Damage breaks "the pointer leads to a whole snapshot" until a run moves the pointer again.
        self.damaged = False
        self.restarts = 0

    def live_runs(self) -> list[Run]:
        return [run for run in self.runs if run.live]

    def damage(self, pointer_changed: bool) -> None:
        self.damaged = True
        if pointer_changed:
            # The pointer is the environment's now; from here it must not go back again.
            self.checker.pointer_seen = inspect(self.checker.client).pointer_generation

    # -- the protocol --

    @precondition(lambda self: len(self.live_runs()) < MAX_LIVE_RUNS)
    @rule(older=st.booleans(), gap=st.integers(min_value=1, max_value=900))
    def start_run(self, older: bool, gap: int) -> None:
        # An older run started earlier but reaches the cache later; a newer one started after every other.
        if older:
            generation = self.newest - gap
        else:
            self.newest += 1000
            generation = self.newest
        used = {run.generation for run in self.runs}
        if generation in used:
            return
        busy = {id(run.client) for run in self.live_runs()}
        client = next(client for client in self.clients.runs if id(client) not in busy)
        self.runs.append(Run(client, generation))
        self.tally["older run" if older else "newer run"] += 1

    @precondition(lambda self: self.live_runs())
    @rule(data=st.data(), steps=st.integers(min_value=1, max_value=5), dies=st.integers(min_value=0, max_value=7))
    def step_run(self, data, steps: int, dies: int) -> None:
        """Take up to five steps of one run, the invariants after each; or, one time in eight, it dies here."""
        run = data.draw(st.sampled_from(self.live_runs()))
        if dies == 0:
            run.kill()
            self.tally["run died"] += 1
            return
        for _step in range(steps):
            if not run.live:
                break
            step = run.step()
            self.tally[step] += 1
            if step == "pointer-swapped":
                self.damaged = False
            self.check_protocol(f"run {run.generation} {step}")

    @rule()
    def read(self) -> None:
        self.checker.after_step("read")

    # -- damage --

    @rule(kind=st.sampled_from(["evict", "garbage", "older pointer"]), data=st.data())
    def damage_cache(self, kind: str, data) -> None:
        """Damage the cache as production does; one rule, so damage is no likelier than a run's step."""
        if kind == "evict":
            self.evict(data.draw(st.sampled_from(["current", "previous", "pointer"])))
        elif kind == "garbage":
            self.write_garbage(data.draw(st.sampled_from(["current", "pointer"])), data.draw(GARBAGE))
        else:
            self.older_pointer_appears(data.draw(st.integers(min_value=1, max_value=3000)))

    def evict(self, which: str) -> None:
        state = inspect(self.checker.client)
        if which == "pointer":
            self.checker.client.delete(pointer_key(PREFIX))
        else:
            generation = state.pointer_generation if which == "current" else state.pointer_previous
            if generation is None:
                return
            self.checker.client.delete(snapshot_key(PREFIX, generation))
        self.damage(pointer_changed=which == "pointer")
        self.tally[f"evicted {which}"] += 1

    def write_garbage(self, which: str, value: bytes) -> None:
        state = inspect(self.checker.client)
        if which == "pointer":
            key = pointer_key(PREFIX)
        elif state.pointer_generation is not None:
            key = snapshot_key(PREFIX, state.pointer_generation)
        else:
            return
        self.checker.client.set(key, value)
        self.damage(pointer_changed=which == "pointer")
        self.tally[f"garbage {which}"] += 1

    def older_pointer_appears(self, back: int) -> None:
        state = inspect(self.checker.client)
        if state.pointer_generation is None:
            return
        older = state.pointer_generation - back
        # A rejoining server holds the pointer and (often) the snapshot it named then.
        self.checker.client.set(snapshot_key(PREFIX, older), encode_snapshot(make_snapshot(older)))
        self.checker.client.set(pointer_key(PREFIX), encode_pointer(Pointer(older, None)))
        self.damage(pointer_changed=True)
        self.tally["older pointer"] += 1
        if self.checker.shown and max(self.checker.shown) > older:
            self.tally["older pointer after a newer was shown"] += 1

    @precondition(lambda self: self.restarts < MAX_RESTARTS)
    @rule()
    def restart_memcached(self) -> None:
        self.restarts += 1
        self.server.process.kill()
        self.server.process.wait()
        # While it is down, a reader that showed a list keeps it (stale-if-error); one that never did has nothing.
        shown = self.checker.shown
        reading = self.checker.reader.read(self.checker.now())
        if shown:
            assert (reading.state, reading.generation, reading.reachable) == (State.STALE, max(shown), False)
        else:
            assert reading.state is State.UNAVAILABLE
        fresh = self.checker.new_reader("fresh_reader").read(self.checker.now())
        assert (fresh.state, fresh.reachable) == (State.UNAVAILABLE, False)
        self.server.start()
        self.clients.reconnect()
        self.damage(pointer_changed=True)
        self.tally["memcached restart"] += 1

    # -- the invariants --

    def check_protocol(self, where: str) -> None:
        if self.damaged:
            self.check_pointer_never_back(where)
            self.checker.after_step(where)
        else:
            self.checker.after_protocol_step(where)

    def check_pointer_never_back(self, where: str) -> None:
        generation = inspect(self.checker.client).pointer_generation
        seen = self.checker.pointer_seen
        if generation is not None:
            assert seen is None or generation >= seen, f"{where}: pointer moved back from {seen} to {generation}"
            self.checker.pointer_seen = generation

    @invariant()
    def readers_never_go_back(self) -> None:
        type(self).rules_run += 1
        self.checker.after_step("after a rule")


RULES = (
    "newer run",
    "older run",
    "pointer-swapped",
    "run died",
    "evicted current",
    "evicted previous",
    "evicted pointer",
    "garbage current",
    "garbage pointer",
    "older pointer after a newer was shown",
    "memcached restart",
)


@pytest.fixture(scope="module")
def model_memcached():
    """A memcached of the model's own: the machine restarts it."""
    with MemcachedProcess() as server:
        yield server


def test_random_runs_reads_and_damage_keep_every_invariant(model_memcached):
    ProtocolMachine.server = model_memcached
    ProtocolMachine.clients = Clients(model_memcached.address)
    ProtocolMachine.examples = ProtocolMachine.rules_run = 0
    ProtocolMachine.tally.clear()

    run_state_machine_as_test(
        ProtocolMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS_PER_EXAMPLE,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )

    print(
        f"\nmodel check (hypothesis, derandomized): {ProtocolMachine.examples} examples,"
        f" {ProtocolMachine.rules_run} rules, 0 invariant violations; {dict(ProtocolMachine.tally)}"
    )
    assert ProtocolMachine.examples >= EXAMPLES
    assert all(ProtocolMachine.tally[name] > 0 for name in RULES), ProtocolMachine.tally

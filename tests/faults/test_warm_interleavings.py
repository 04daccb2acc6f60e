"""Warm runs killed mid-publish, and concurrent warm runs driven step by step through exact interleavings.

Each run is a real process (tests/faults/warm_runner.py) that stops at a
protocol step until the test releases it, so every interleaving is forced,
never hoped for. The pointer is read after every step: its generation must
never decrease.
"""

from __future__ import annotations

import pytest

from app.core.snapshot import lease_key
from tests.faults.helpers import PREFIX
from tests.faults.helpers import Stack
from tests.faults.helpers import cache_delete
from tests.faults.helpers import lease_at
from tests.faults.helpers import snapshot_at
from tests.faults.helpers import summary_of
from tests.support import memcached_stats

pytestmark = pytest.mark.faults

MEMBERS = ("alice", "bob", "carol", "dave", "erin")
STEPS = ("fetched", "snapshot-written", "read-back", "pointer-read", "pointer-swapped")


@pytest.fixture(scope="module")
def shared_stack(tmp_path_factory):
    """One site for the module; each test starts from a flushed cache and a fresh first publish."""
    stack = Stack.start(tmp_path_factory.mktemp("interleavings"))
    try:
        stack.add_members(*MEMBERS)
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def site(shared_stack):
    shared_stack.cache.flush()
    shared_stack.lastfm.control("reset")
    shared_stack.warm_ok()
    yield shared_stack
    for run in shared_stack.runs:
        run.stop()
    shared_stack.runs.clear()


class PointerWatch:
    """Read the pointer after every step; its generation must never go down."""

    def __init__(self, site) -> None:
        self.site = site
        self.seen = [site.pointer().generation]

    def check(self) -> int:
        generation = self.site.pointer().generation
        assert generation >= self.seen[-1], f"pointer moved back from {self.seen[-1]} to {generation}"
        self.seen.append(generation)
        return generation


def lastfm_requests(site) -> int:
    return site.lastfm.stats()["requests"]


# -- item 4: SIGKILL at each step ---------------------------------------------------------------------------------


@pytest.mark.parametrize("step", STEPS)
def test_run_killed_at_step_leaves_complete_snapshot_and_no_stuck_lock(step, site):
    before = site.api()
    run = site.paused("killed", pause_at=(step,))
    generation = run.wait_reached(step)
    shown_at_step = site.api()

    run.kill()

    after_kill = site.api()
    # Old or new, always one whole snapshot: the API's generation matches what the pointer names.
    expected = generation if step == "pointer-swapped" else before["generation"]
    assert shown_at_step["generation"] == after_kill["generation"] == site.pointer().generation == expected
    assert len(after_kill["data"]) == len(MEMBERS) and after_kill["state"] == "fresh"
    # The killed run's lease outlives it; another host respects it ...
    assert lease_at(site.cache.address).split(b" ", 1)[0] == str(generation).encode()
    other = site.warm(**site.other_host("other"))
    assert other.returncode == 0 and summary_of(other.stderr)["outcome"] == "leased"
    # ... and the next run on this host (the kernel dropped the flock) takes it over and publishes.
    following = site.warm()
    assert following.returncode == 0 and summary_of(following.stderr)["outcome"] == "published", following.stderr
    assert "taking over lease" in following.stderr
    assert site.api()["generation"] == int(summary_of(following.stderr)["generation"]) > expected
    assert lease_at(site.cache.address) is None


# -- item 5: two runs at once -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "outcome"), [("same-host", "locked"), ("other-host", "leased")])
def test_second_run_exits_0_without_fetching_while_first_holds_lock_or_lease(host, outcome, site):
    watch = PointerWatch(site)
    first = site.paused("first", pause_at=("fetched",))
    first_generation = first.wait_reached("fetched")
    requests_before = lastfm_requests(site)

    second = site.warm(**(site.other_host("b") if host == "other-host" else {}))

    assert second.returncode == 0 and summary_of(second.stderr)["outcome"] == outcome, second.stderr
    assert lastfm_requests(site) == requests_before  # the second run fetched nothing
    assert snapshot_at(site.cache.address, int(summary_of(second.stderr)["generation"])) is None
    watch.check()
    first.release("fetched")
    first.finish()
    assert first.returncode == 0 and first.summary["outcome"] == "published"
    assert watch.check() == first_generation
    assert lease_at(site.cache.address) is None


# An interleaving is a list of actions on two runs on different hosts:
#   ("start", run, pause_step)  start the run (later starts have newer generations), wait until paused
#   ("expire-lease",)           the lease expires (deleted), as if the paused run were too slow
#   ("release", run)            let the paused run go on to its next pause or its end
#   ("finish", run)             wait for the run to exit
# expected: each run's outcome, and which run's generation the pointer finally names.
INTERLEAVINGS = {
    "older-paused-after-read-back-newer-completes": (
        [
            ("start", "older", "read-back"),
            ("expire-lease",),
            ("start", "newer", None),
            ("finish", "newer"),
            ("release", "older"),
            ("finish", "older"),
        ],
        {"older": "superseded", "newer": "published"},
        "newer",
    ),
    "older-paused-between-gets-and-cas-newer-swaps": (
        [
            ("start", "older", "pointer-read"),
            ("expire-lease",),
            ("start", "newer", None),
            ("finish", "newer"),
            ("release", "older"),
            ("finish", "older"),
        ],
        {"older": "superseded", "newer": "published"},
        "newer",
    ),
    "newer-paused-between-gets-and-cas-older-swaps": (
        [
            ("start", "older", "fetched"),
            ("expire-lease",),
            ("start", "newer", "pointer-read"),
            ("release", "older"),
            ("finish", "older"),
            ("release", "newer"),
            ("finish", "newer"),
        ],
        {"older": "published", "newer": "published"},
        "newer",
    ),
    "both-fetched-older-publishes-first": (
        [
            ("start", "older", "fetched"),
            ("expire-lease",),
            ("start", "newer", "fetched"),
            ("release", "older"),
            ("finish", "older"),
            ("release", "newer"),
            ("finish", "newer"),
        ],
        {"older": "published", "newer": "published"},
        "newer",
    ),
    "both-fetched-newer-publishes-first": (
        [
            ("start", "older", "fetched"),
            ("expire-lease",),
            ("start", "newer", "fetched"),
            ("release", "newer"),
            ("finish", "newer"),
            ("release", "older"),
            ("finish", "older"),
        ],
        {"older": "superseded", "newer": "published"},
        "newer",
    ),
    "both-read-back-then-older-swaps-while-newer-waits-at-cas": (
        [
            ("start", "older", "read-back"),
            ("expire-lease",),
            ("start", "newer", "pointer-read"),
            ("release", "older"),
            ("finish", "older"),
            ("release", "newer"),
            ("finish", "newer"),
        ],
        {"older": "published", "newer": "published"},
        "newer",
    ),
}


@pytest.mark.parametrize("name", sorted(INTERLEAVINGS))
def test_lease_expired_interleaving_never_moves_pointer_back(name, site):
    actions, outcomes, final = INTERLEAVINGS[name]
    watch = PointerWatch(site)
    runs, generations, paused_at = {}, {}, {}
    cas_conflicts_before = memcached_stats(site.cache.address)["cas_badval"]

    for action in actions:
        kind, label = action[0], action[1] if len(action) > 1 else None
        if kind == "start":
            pause = action[2]
            runs[label] = site.paused(label, pause_at=(pause,) if pause else (), **site.other_host(label))
            if pause:
                generations[label] = runs[label].wait_reached(pause)
                paused_at[label] = pause
        elif kind == "expire-lease":
            cache_delete(site.cache.address, lease_key(PREFIX))
        elif kind == "release":
            runs[label].release(paused_at[label])
        elif kind == "finish":
            runs[label].finish()
            assert runs[label].returncode == 0, runs[label].stderr
            generations[label] = int(runs[label].summary["generation"])
        watch.check()

    assert generations["older"] < generations["newer"]
    assert {label: run.summary["outcome"] for label, run in runs.items()} == outcomes
    assert site.pointer().generation == generations[final]
    assert site.api()["generation"] == generations[final]
    assert lease_at(site.cache.address) is None
    cas_conflicts = memcached_stats(site.cache.address)["cas_badval"] - cas_conflicts_before
    if "between-gets-and-cas" in name or "waits-at-cas" in name:
        # The run waiting between gets and cas lost the race, saw it, and read the pointer again.
        waiting = "older" if name.startswith("older") else "newer"
        assert cas_conflicts == 1 and "pointer changed during swap (attempt 1); retrying" in runs[waiting].stderr
    else:
        assert cas_conflicts == 0

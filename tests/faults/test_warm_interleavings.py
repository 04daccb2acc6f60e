"""Warm runs killed mid-publish, and concurrent warm runs driven step by step through exact interleavings.

Each run is a real process (tests/support/warm_runner.py) that stops at a
protocol step until the test releases it, so every interleaving is forced,
never hoped for. The pointer is read after every step: its generation must
never decrease.
"""

from __future__ import annotations

import pytest

from app.core.snapshot import lease_key
from tests.support.memcached import cache_delete
from tests.support.memcached import memcached_stats
from tests.support.stack import PREFIX
from tests.support.stack import lease_at
from tests.support.stack import snapshot_at
from tests.support.stack import stack_fixture
from tests.support.warmlog import summary_of

MEMBERS = ("alice", "bob", "carol", "dave", "erin")
STEPS = ("fetched", "snapshot-written", "read-back", "pointer-read", "pointer-swapped")


# One site for the module; each test starts from a flushed cache and a fresh first publish.
shared_stack = stack_fixture("interleavings", members=MEMBERS)


@pytest.fixture
def site(shared_stack):
    shared_stack.reset()
    shared_stack.warm_ok()
    yield shared_stack
    shared_stack.stop_runs()


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


def newer_completes(older_at: str) -> list[tuple]:
    """The older run pauses at older_at, its lease expires, a newer run runs to its end, then the older goes on."""
    return [
        ("start", "older", older_at),
        ("expire-lease",),
        ("start", "newer", None),
        ("finish", "newer"),
        ("release", "older"),
        ("finish", "older"),
    ]


def both_paused(older_at: str, newer_at: str, first: str) -> list[tuple]:
    """Both runs pause (the older's lease expiring in between); first goes on to its end, then the other."""
    second = "newer" if first == "older" else "older"
    return [
        ("start", "older", older_at),
        ("expire-lease",),
        ("start", "newer", newer_at),
        ("release", first),
        ("finish", first),
        ("release", second),
        ("finish", second),
    ]


SUPERSEDED = {"older": "superseded", "newer": "published"}
BOTH_PUBLISHED = {"older": "published", "newer": "published"}
INTERLEAVINGS = {
    "older-paused-after-read-back-newer-completes": (newer_completes("read-back"), SUPERSEDED, "newer"),
    "older-paused-between-gets-and-cas-newer-swaps": (newer_completes("pointer-read"), SUPERSEDED, "newer"),
    "newer-paused-between-gets-and-cas-older-swaps": (
        both_paused("fetched", "pointer-read", "older"),
        BOTH_PUBLISHED,
        "newer",
    ),
    "both-fetched-older-publishes-first": (both_paused("fetched", "fetched", "older"), BOTH_PUBLISHED, "newer"),
    "both-fetched-newer-publishes-first": (both_paused("fetched", "fetched", "newer"), SUPERSEDED, "newer"),
    "both-read-back-then-older-swaps-while-newer-waits-at-cas": (
        both_paused("read-back", "pointer-read", "older"),
        BOTH_PUBLISHED,
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

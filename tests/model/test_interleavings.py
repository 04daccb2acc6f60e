"""Every interleaving of two warm runs' publish steps, and every death, checked step by step against a real memcached.

Two runs publish at once: an older generation and a newer one, both newer
than what is published (or with nothing published yet). Every order in which
their protocol steps can run is tried (about 250 for two runs of five
steps; a CAS conflict or a superseded run changes a run's count), and for
each schedule so far, a variant where either run dies at its next step.
After every step the invariants of tests/model/protocol.py hold: the
pointer never moves back and always leads to a whole snapshot, and a reader
never shows an older generation, a mix, or `warming`/`empty` while a
snapshot is reachable.
"""

from __future__ import annotations

import dataclasses

import pytest

from app.warm import publisher
from tests.model.protocol import PREFIX
from tests.model.protocol import Checker
from tests.model.protocol import Clients
from tests.model.protocol import Run

PUBLISHED = 1000
OLDER = 2000
NEWER = 3000

# An action: ("step", run index) or ("kill", run index).
Action = tuple[str, int]


@dataclasses.dataclass
class Counts:
    interleavings: int = 0
    with_death: int = 0
    steps: int = 0


def replay(clients: Clients, flush, initial: str, schedule: list[Action]) -> tuple[list[Run], Checker]:
    """Start from the initial state and play schedule, checking every invariant after each action."""
    flush()
    if initial == "published":
        first = Run(clients.runs[2], PUBLISHED)
        while first.live:
            first.step()
        assert first.outcome is publisher.PublishOutcome.PUBLISHED
    checker = Checker(clients)
    checker.after_protocol_step(f"{initial}: start")
    runs = [Run(clients.runs[0], OLDER), Run(clients.runs[1], NEWER)]
    for index, (action, run) in enumerate(schedule):
        if action == "kill":
            runs[run].kill()
        else:
            runs[run].step()
        checker.after_protocol_step(f"{initial}: {describe(schedule[: index + 1])}")
    return runs, checker


def describe(schedule: list[Action]) -> str:
    names = ("older", "newer")
    return ", ".join(f"{names[run]}{'' if action == 'step' else ' dies'}" for action, run in schedule)


def explore(clients: Clients, flush, initial: str, schedule: list[Action], counts: Counts) -> None:
    """Try every next action after schedule, depth first, replaying the schedule from scratch each time."""
    runs, _ = replay(clients, flush, initial, schedule)
    counts.steps += len(schedule)
    live = [index for index, run in enumerate(runs) if run.live]
    if not live:
        died = any(action == "kill" for action, _ in schedule)
        if died:
            counts.with_death += 1
        else:
            counts.interleavings += 1
            check_outcome(runs, schedule)
        return
    died = any(action == "kill" for action, _ in schedule)
    for index in live:
        explore(clients, flush, initial, [*schedule, ("step", index)], counts)
        if not died:
            explore(clients, flush, initial, [*schedule, ("kill", index)], counts)


def swap_positions(runs: list[Run], schedule: list[Action]) -> list[int | None]:
    """Return where in schedule each run swapped the pointer, None for a run that never did."""
    taken = [0] * len(runs)
    positions: list[int | None] = [None] * len(runs)
    for position, (_, run) in enumerate(schedule):
        if runs[run].steps[taken[run]] == "pointer-swapped":
            positions[run] = position
        taken[run] += 1
    return positions


def check_outcome(runs: list[Run], schedule: list[Action]) -> None:
    """Both runs finished: the newer one published; the older one published if it swapped first, else superseded."""
    older, newer = runs
    older_swap, newer_swap = swap_positions(runs, schedule)
    swapped_first = older_swap is not None and newer_swap is not None and older_swap < newer_swap
    expected = publisher.PublishOutcome.PUBLISHED if swapped_first else publisher.PublishOutcome.SUPERSEDED
    assert newer.outcome is publisher.PublishOutcome.PUBLISHED, (describe(schedule), newer.error)
    assert older.outcome is expected, (describe(schedule), older.error)


@pytest.mark.parametrize("initial", ["empty", "published"])
def test_every_interleaving_and_death_of_two_runs_keeps_every_invariant(initial, memcached, request):
    counts = Counts()

    explore(Clients(memcached.address), memcached.flush, initial, [], counts)

    # Each run takes five steps when it publishes (write, read back, read the
    # pointer, swap it, read it back), fewer when superseded, more after a
    # CAS conflict: C(10, 5) = 252 orders, give or take those.
    print(
        f"\nmodel check ({initial}): {counts.interleavings} interleavings, {counts.with_death} with a run dying,"
        f" {counts.steps} steps replayed, 0 invariant violations"
    )
    assert 200 <= counts.interleavings <= 400, counts
    assert counts.with_death > counts.interleavings, counts
    request.node.user_properties.append(("interleavings", counts.interleavings))
    request.node.user_properties.append(("with_death", counts.with_death))


def test_a_reader_never_shows_the_older_run_after_the_newer_one(memcached):
    # The schedule the protocol exists for: the newer run publishes first, the older one finishes after.
    schedule = [("step", 1)] * 5 + [("step", 0)] * 4
    runs, checker = replay(Clients(memcached.address), memcached.flush, "published", schedule)

    assert [run.outcome for run in runs] == [publisher.PublishOutcome.SUPERSEDED, publisher.PublishOutcome.PUBLISHED]
    assert checker.shown[-1] == NEWER and PREFIX == "model"

"""Polling 10,000 members within Last.fm's budget: a simulation of the real scheduler.

Runs app.schedule (the code the warm job uses) over simulated 5-minute
cycles with the default budget (5 requests/s, 240 s deadline: 1,080 polls a
run). Members listen in sessions; the simulation records how many calls each
cycle makes and, for every listening session that starts, how many cycles
pass before the member is polled while playing (so the page shows them).

    python -m bench.schedule_bench [--members 10000] [--cycles 96] [--seed 7]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from datetime import UTC
from datetime import datetime
from datetime import timedelta

from app.core.snapshot import Track
from app.warm import schedule
from app.warm.members import Member

CYCLE = timedelta(minutes=5)
START = datetime(2026, 12, 1, tzinfo=UTC)


def simulate(count: int, cycles: int, seed: int, rate: float, deadline_s: float, ceiling_s: int) -> dict:
    rng = random.Random(seed)
    budget = schedule.run_budget(rate, deadline_s)
    # Each member listens in sessions: a share of members are regular
    # listeners (a session starts with 2% chance a cycle), the rest rare (0.2%).
    start_chance = {index: (0.02 if rng.random() < 0.3 else 0.002) for index in range(count)}
    listening_until: dict[int, int] = {}
    session_started: dict[int, int] = {}
    members = {index: Member(index, f"m{index}", f"m{index}", True, "ok", None, None) for index in range(count)}
    calls_per_cycle = []
    detection_cycles = []
    missed_sessions = 0
    for cycle in range(cycles):
        now = START + cycle * CYCLE
        for index in range(count):
            if index not in listening_until and rng.random() < start_chance[index]:
                listening_until[index] = cycle + rng.randint(2, 12)
                session_started[index] = cycle
        selected, _ = schedule.select_for_run(list(members.values()), now, budget)
        calls_per_cycle.append(len(selected))
        for member in selected:
            playing = member.id in listening_until
            if playing:
                track = Track(member.username, member.lastfm_username, "a", "", "t", "", "", None, True, now)
                if member.id in session_started:
                    detection_cycles.append(cycle - session_started.pop(member.id))
            else:
                last = member.last_track
                played = (
                    last.played_at if last is not None and last.played_at is not None else START - timedelta(days=3)
                )
                if last is not None and last.now_playing:
                    played = last.fetched_at
                track = Track(member.username, member.lastfm_username, "a", "", "t", "", "", played, False, now)
            due = schedule.next_poll_at(track, now, ceiling_s)
            members[member.id] = Member(member.id, member.username, member.lastfm_username, True, "ok", track, due)
        for index, until in list(listening_until.items()):
            if until <= cycle:
                del listening_until[index]
                if index in session_started:
                    missed_sessions += 1
                    del session_started[index]
    warmup = 12  # the first hour fills the schedule from an empty database
    steady = sorted(detection_cycles)
    return {
        "budget": budget,
        "max_calls": max(calls_per_cycle),
        "max_calls_after_warmup": max(calls_per_cycle[warmup:]),
        "sessions": len(detection_cycles) + missed_sessions,
        "detected": len(detection_cycles),
        "missed": missed_sessions,
        "median": statistics.median(steady) if steady else 0,
        "p90": steady[int(len(steady) * 0.9)] if steady else 0,
        "max": steady[-1] if steady else 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--cycles", type=int, default=96, help="5-minute cycles (96: 8 hours)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--deadline", type=float, default=240.0)
    parser.add_argument("--ceiling", type=int, default=3600)
    args = parser.parse_args(argv)
    row = simulate(args.members, args.cycles, args.seed, args.rate, args.deadline, args.ceiling)
    print(
        f"schedule simulation: {args.members} members, {args.cycles} cycles of 5 min, rate {args.rate}/s, "
        f"deadline {args.deadline:g} s, ceiling {args.ceiling} s"
    )
    print(
        f"budget per run: {row['budget']} polls (Last.fm allows 1,500 per 5 minutes); most in one cycle: {row['max_calls']}"
    )
    print(
        f"listening sessions: {row['sessions']}, seen while playing: {row['detected']}, over before their member was polled: {row['missed']}"
    )
    print(
        f"cycles from session start to the member on the page: median {row['median']}, p90 {row['p90']}, max {row['max']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Polling priority past Last.fm's budget: who is polled, who waits, and for how long."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from datetime import timedelta

import pytest

from app.core.snapshot import Track
from app.warm import schedule
from app.warm.members import Member
from tests.support.tracks import make_track

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HOUR_S = 3600


def track(
    *, played_ago: timedelta | None = None, now_playing: bool = False, fetched_ago: timedelta = timedelta(0)
) -> Track:
    return make_track(
        played_at=NOW - played_ago if played_ago is not None else None,
        now_playing=now_playing,
        fetched_at=NOW - fetched_ago,
    )


def member(member_id: int, last_track: Track | None = None, due_in: timedelta | None = None) -> Member:
    due = NOW + due_in if due_in is not None else None
    return Member(member_id, f"m{member_id}", f"m{member_id}", True, "ok", last_track, due)


@pytest.mark.parametrize(
    ("rate", "deadline_s", "expected"),
    [(5, 240, 1080), (0, 240, None), (1, 1, 1), (0.01, 10, 1)],
)
def test_run_budget_leaves_room_for_retries(rate, deadline_s, expected):
    assert schedule.run_budget(rate, deadline_s) == expected


@pytest.mark.parametrize(
    ("last", "active"),
    [
        (None, False),
        (track(now_playing=True), True),
        (track(now_playing=True, fetched_ago=timedelta(hours=2)), False),
        (track(played_ago=timedelta(minutes=10)), True),
        (track(played_ago=timedelta(minutes=31)), False),
    ],
)
def test_is_active_when(last, active):
    assert schedule.is_active(last, NOW) is active


@pytest.mark.parametrize(
    ("last", "wait"),
    [
        (track(now_playing=True), timedelta(0)),
        (track(played_ago=timedelta(minutes=5)), timedelta(0)),
        (track(played_ago=timedelta(hours=2)), timedelta(minutes=30)),
        (track(played_ago=timedelta(days=3)), timedelta(hours=1)),
        (None, timedelta(hours=1)),
    ],
)
def test_next_poll_at_backs_off_with_quiet_time_up_to_ceiling(last, wait):
    assert schedule.next_poll_at(last, NOW, HOUR_S) == NOW + wait


def test_select_for_run_polls_everyone_while_budget_covers_them():
    members = [member(index, due_in=timedelta(hours=1)) for index in range(5)]

    selected, deferred = schedule.select_for_run(members, NOW, budget=5)

    assert [m.id for m in selected] == [0, 1, 2, 3, 4] and deferred == []


def test_select_for_run_puts_active_then_never_polled_then_most_overdue_first():
    members = [
        member(1, track(played_ago=timedelta(days=1)), due_in=timedelta(minutes=-5)),
        member(2, track(now_playing=True), due_in=timedelta(0)),
        member(3, None, due_in=None),
        member(4, track(played_ago=timedelta(days=2)), due_in=timedelta(minutes=-50)),
        member(5, track(played_ago=timedelta(days=2)), due_in=timedelta(minutes=40)),
    ]

    selected, deferred = schedule.select_for_run(members, NOW, budget=4)

    assert [m.id for m in selected] == [2, 3, 4, 1]
    assert [m.id for m in deferred] == [5]


def test_select_for_run_caps_active_members_so_quiet_ones_never_starve():
    active = [member(index, track(now_playing=True)) for index in range(10)]
    quiet = [
        member(100 + index, track(played_ago=timedelta(days=1)), due_in=timedelta(minutes=-index))
        for index in range(10)
    ]

    selected, deferred = schedule.select_for_run(active + quiet, NOW, budget=6)

    assert sum(1 for m in selected if m.id < 100) == 3
    assert [m.id for m in selected if m.id >= 100] == [109, 108, 107]
    assert len(deferred) == 14


def test_select_for_run_reaches_every_member_within_members_over_budget_cycles():
    """Simulate cycles: with 100 quiet members and a budget of 10, everyone is polled within 10 cycles."""
    members = {index: member(index, track(played_ago=timedelta(days=5)), due_in=None) for index in range(100)}
    polled_at: dict[int, int] = {}
    for cycle in range(10):
        now = NOW + timedelta(minutes=5 * cycle)
        selected, _ = schedule.select_for_run(list(members.values()), now, budget=10)
        for chosen in selected:
            polled_at.setdefault(chosen.id, cycle)
            due = schedule.next_poll_at(chosen.last_track, now, HOUR_S)
            members[chosen.id] = Member(
                chosen.id, chosen.username, chosen.lastfm_username, True, "ok", chosen.last_track, due
            )

    assert sorted(polled_at) == list(range(100))

"""Polling past the budget, through real warm runs: priority, deferral, and the schedule kept in SQLite."""

from __future__ import annotations

import dataclasses
from contextlib import closing
from datetime import timedelta

import pytest

from app.warm import job
from app.warm import members
from tests.integration.test_protocol import T0
from tests.integration.test_protocol import add_members
from tests.support.lastfm_stub import recent_payload

NAMES = ("alice", "bob", "carol", "dave")


@pytest.fixture
def stub(stub):
    for name in NAMES:
        stub.answers[name] = recent_payload(name, "Low", f"{name} song", played=T0 - timedelta(days=2))
    return stub


@pytest.fixture
def short_budget(settings):
    """Settings whose rate and deadline allow 2 calls a run (2/s x 1.2 s x 0.9, rounded down)."""
    return dataclasses.replace(settings, rate=2, deadline_s=1.2)


def schedule_of(settings) -> dict[str, object]:
    with closing(members.connect(settings.database)) as connection:
        return {member.username: member.next_poll_at for member in members.list_members(connection)}


def test_run_polls_only_its_budget_and_defers_the_rest(short_budget, memcached, stub):
    add_members(short_budget, *NAMES)

    result = job.run(short_budget, now=T0)

    assert (result.fetched, result.deferred, result.failed) == (2, 2, 0)
    assert sorted(stub.calls) == ["alice", "bob"]
    assert "deferred=2" in result.summary()


def test_runs_take_turns_so_every_member_is_polled(short_budget, memcached, stub):
    add_members(short_budget, *NAMES)

    for cycle in range(2):
        job.run(short_budget, now=T0 + timedelta(minutes=5 * cycle))

    assert sorted(stub.calls) == sorted(NAMES)
    assert all(due is not None and due > T0 for due in schedule_of(short_budget).values())


def test_member_who_starts_playing_is_polled_every_cycle(short_budget, memcached, stub):
    add_members(short_budget, *NAMES)
    stub.answers["dave"] = recent_payload("dave", "Low", "Lullaby", now_playing=True)
    for cycle in range(2):
        job.run(short_budget, now=T0 + timedelta(minutes=5 * cycle))
    stub.calls.clear()

    job.run(short_budget, now=T0 + timedelta(minutes=10))

    assert "dave" in stub.calls
    assert schedule_of(short_budget)["dave"] == T0 + timedelta(minutes=10)


def test_quiet_member_backs_off_up_to_the_ceiling(settings, memcached, stub):
    add_members(settings, *NAMES)

    job.run(settings, now=T0)

    due = schedule_of(settings)
    assert due["alice"] == T0 + timedelta(seconds=settings.max_poll_interval_s)

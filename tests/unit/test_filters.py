"""Jinja filters: relative and exact times, member badges."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest

from app.web import filters

NOW = datetime(2026, 12, 1, 12, 30, 45, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ago", "short", "long"),
    [
        (timedelta(seconds=-30), "just now", "just now"),
        (timedelta(seconds=59), "just now", "just now"),
        (timedelta(seconds=60), "1 min ago", "1 minute ago"),
        (timedelta(minutes=3, seconds=59), "3 min ago", "3 minutes ago"),
        (timedelta(minutes=59), "59 min ago", "59 minutes ago"),
        (timedelta(hours=1), "1 hour ago", "1 hour ago"),
        (timedelta(hours=23, minutes=59), "23 hours ago", "23 hours ago"),
        (timedelta(days=1), "1 day ago", "1 day ago"),
        (timedelta(days=9), "9 days ago", "9 days ago"),
    ],
)
def test_relative_time_words_when(ago, short, long):
    assert filters.relative_time(NOW - ago, NOW) == short
    assert filters.relative_time(NOW - ago, NOW, long=True) == long


def test_clock_and_exact_time_are_utc_to_the_minute():
    moment = datetime(2026, 12, 1, 8, 4, 59, tzinfo=timezone(timedelta(hours=1)))

    assert filters.clock_time(moment) == "07:04 UTC"
    assert filters.exact_time(moment) == "2026-12-01 07:04 UTC"


@pytest.mark.parametrize(
    ("ago", "expected"),
    [(timedelta(hours=23), "13:30 UTC"), (timedelta(days=1), "2026-11-30 12:30 UTC")],
)
def test_update_time_adds_the_date_after_a_day(ago, expected):
    assert filters.update_time(NOW - ago, NOW) == expected


@pytest.mark.parametrize(("name", "expected"), [("alice", "A"), ("_bob", "B"), ("9lives", "9"), ("__", "?"), ("", "?")])
def test_initial_is_first_letter_or_digit(name, expected):
    assert filters.initial(name) == expected


def test_hue_is_stable_case_insensitive_and_in_range():
    names = [f"member{index}" for index in range(50)]

    assert all(0 <= filters.hue(name) < 6 for name in names)
    assert filters.hue("Alice") == filters.hue("alice")
    assert len({filters.hue(name) for name in names}) > 1

"""Who a warm run polls when Last.fm's rate limit cannot cover every member.

Pure code, no I/O. Members who are playing or played recently are polled
every cycle; quiet members back off, the longer they have been quiet, up to
a ceiling; spare budget goes to whoever is due soonest, so nobody starves.
While the budget covers every member, everyone is polled every run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from datetime import timedelta

from app.core.snapshot import Track
from app.warm.members import Member

# A member who played within this window is "active": polled every cycle.
ACTIVE_WINDOW = timedelta(minutes=30)
# A quiet member's poll interval is this fraction of how long they have been quiet.
BACKOFF_FRACTION = 0.25
# Share of the budget, when it is short, that active members may take; the
# rest always goes to the longest-waiting quiet members, so none starves.
ACTIVE_SHARE = 0.5
# Calls held back from the budget for retries of transient failures.
RETRY_RESERVE = 0.1


def run_budget(rate: float, deadline_s: float) -> int | None:
    """Return how many members one run can poll within Last.fm's rate, or None when unlimited."""
    if rate <= 0:
        return None
    return max(1, math.floor(rate * deadline_s * (1 - RETRY_RESERVE)))


def is_active(track: Track | None, now: datetime) -> bool:
    """Return whether a member's last known track makes them worth polling every cycle."""
    if track is None:
        return False
    if track.now_playing:
        return now - track.fetched_at <= ACTIVE_WINDOW
    return track.played_at is not None and now - track.played_at <= ACTIVE_WINDOW


def next_poll_at(track: Track | None, now: datetime, ceiling_s: int) -> datetime:
    """Return when a member just fetched successfully is due again.

    Active members are due at once (next cycle); quiet ones after a quarter
    of their quiet time, at most ceiling_s; members without any scrobble
    after ceiling_s.
    """
    if is_active(track, now):
        return now
    if track is None or track.played_at is None:
        return now + timedelta(seconds=ceiling_s)
    quiet_s = (now - track.played_at).total_seconds()
    return now + timedelta(seconds=min(ceiling_s, quiet_s * BACKOFF_FRACTION))


def select_for_run(members: Sequence[Member], now: datetime, budget: int | None) -> tuple[list[Member], list[Member]]:
    """Split members into those this run polls and those it defers, by priority.

    Order: active members (at most ACTIVE_SHARE of a short budget), then
    members due now (never polled first, then the longest overdue), then the
    rest by how soon they are due.
    """
    if budget is None or budget >= len(members):
        return list(members), []

    def due_key(member: Member) -> tuple:
        due = member.next_poll_at
        return (due is not None, due or now, member.id)

    active = sorted((member for member in members if is_active(member.last_track, now)), key=due_key)
    share = max(1, math.floor(budget * ACTIVE_SHARE))
    active, active_overflow = active[:share], active[share:]
    chosen = {member.id for member in active + active_overflow}
    quiet = sorted((member for member in members if member.id not in chosen), key=due_key)
    # Active members past their share only get what the quiet ones leave.
    selected = (active + quiet + active_overflow)[:budget]
    polled = {member.id for member in selected}
    return selected, [member for member in members if member.id not in polled]

"""The one fake clock of the tests: a wall-clock time and monotonic seconds that move only when told.

The code under test takes its time as arguments (`clock=`, `sleep=`, `now=`,
`create_app(settings, clock=...)`), so a test pins time instead of racing it.
"""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from datetime import timedelta

# The wall-clock start of a FakeClock unless a test names its own: whole
# seconds, as the snapshot format keeps them.
START = datetime(2026, 1, 2, 3, 5, tzinfo=UTC)
# Where monotonic seconds start: any value will do, as only differences count.
MONOTONIC_START_S = 1000.0


class FakeClock:
    """A clock for tests: wall time (`now`) and monotonic seconds (`monotonic`) advance together.

    Time moves only through `advance`, `advance_to`, `sleep` (which also
    records each pause in `sleeps`), or by `step_s` on every monotonic
    reading, for code that must see time pass while it polls.
    """

    def __init__(self, start: datetime = START, *, monotonic_s: float = MONOTONIC_START_S, step_s: float = 0.0) -> None:
        self.wall = start
        self.monotonic_s = monotonic_s
        self.step_s = step_s
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        """Return the wall-clock time, an aware UTC datetime (the views' and the warm job's "now")."""
        return self.wall

    def monotonic(self) -> float:
        """Return monotonic seconds, after moving on by step_s (a stand-in for time.monotonic)."""
        if self.step_s:
            self.advance(self.step_s)
        return self.monotonic_s

    def advance(self, seconds: float) -> None:
        """Move both readings on by seconds (never back)."""
        assert seconds >= 0, f"a clock never goes back ({seconds} s)"
        self.monotonic_s += seconds
        self.wall += timedelta(seconds=seconds)

    def advance_to(self, moment: datetime) -> None:
        """Move on until the wall clock reads moment (never back)."""
        self.advance((moment - self.wall).total_seconds())

    def sleep(self, seconds: float) -> None:
        """Record a pause and let it pass at once (a stand-in for time.sleep)."""
        assert seconds >= 0, f"cannot sleep {seconds} s"
        self.sleeps.append(seconds)
        self.advance(seconds)

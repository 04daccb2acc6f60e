from __future__ import annotations

import math
import threading
import time

import pytest

from app.warm import throttle
from tests.support.clock import FakeClock


def make_limiter(rate: float, burst: int | None = None, clock: FakeClock | None = None) -> throttle.RateLimiter:
    clock = clock if clock is not None else FakeClock()
    return throttle.RateLimiter(rate, burst, clock=clock.monotonic, sleep=clock.sleep)


def test_rate_limiter_acquire_returns_at_once_for_the_first_token(clock):
    limiter = make_limiter(5, clock=clock)

    assert limiter.acquire() is True
    assert clock.sleeps == []


def test_rate_limiter_acquire_waits_one_interval_for_the_next_token(clock):
    limiter = make_limiter(5, clock=clock)

    limiter.acquire()
    assert limiter.acquire() is True

    assert clock.monotonic_s == pytest.approx(1000.2)


@pytest.mark.parametrize(("rate", "expected_burst"), [(0.5, 1), (1, 1), (2.6, 3), (5, 5), (0, 1)])
def test_rate_limiter_burst_defaults_to_the_rounded_rate(rate, expected_burst):
    assert make_limiter(rate).burst == expected_burst


def test_rate_limiter_acquire_allows_a_burst_after_idling(clock):
    limiter = make_limiter(5, burst=3, clock=clock)
    limiter.acquire()
    clock.sleep(60)
    clock.sleeps.clear()

    for _ in range(3):
        assert limiter.acquire() is True
    assert clock.sleeps == []

    limiter.acquire()
    assert sum(clock.sleeps) == pytest.approx(0.2)


def test_rate_limiter_acquire_never_sleeps_when_rate_is_zero(clock):
    limiter = make_limiter(0, clock=clock)

    assert all(limiter.acquire() for _ in range(1000))
    assert clock.sleeps == []


def test_rate_limiter_acquire_returns_false_without_a_token_when_deadline_comes_first(clock):
    limiter = make_limiter(5, clock=clock)
    limiter.acquire()

    assert limiter.acquire(deadline=clock.monotonic() + 0.1) is False
    assert clock.sleeps == []

    # The refused call took nothing: the next token still comes 0.2 s after the first.
    assert limiter.acquire(deadline=clock.monotonic() + 0.2) is True
    assert clock.monotonic_s == pytest.approx(1000.2)


def test_rate_limiter_never_exceeds_rate_times_seconds_plus_burst(clock):
    limiter = make_limiter(5, clock=clock)
    end = clock.monotonic() + 300
    calls = 0

    while limiter.acquire(deadline=end):
        calls += 1

    assert calls <= 5 * 300 + limiter.burst
    assert calls >= 5 * 300


def test_rate_limiter_pause_until_makes_callers_wait_for_the_moment(clock):
    limiter = make_limiter(5, clock=clock)
    clock.sleep(10)

    limiter.pause_until(clock.monotonic() + 30)

    assert limiter.acquire() is True
    assert clock.monotonic_s == pytest.approx(1040.0)


def test_rate_limiter_pause_until_applies_when_rate_is_zero(clock):
    limiter = make_limiter(0, clock=clock)

    limiter.pause_until(clock.monotonic() + 7)
    limiter.acquire()

    assert clock.monotonic_s == pytest.approx(1007.0)


def test_rate_limiter_acquire_returns_false_when_paused_past_the_deadline(clock):
    limiter = make_limiter(5, clock=clock)
    limiter.pause_until(clock.monotonic() + 30)

    assert limiter.acquire(deadline=clock.monotonic() + 29) is False
    assert clock.sleeps == []


def test_rate_limiter_pause_until_keeps_the_later_moment(clock):
    limiter = make_limiter(5, clock=clock)

    limiter.pause_until(clock.monotonic() + 30)
    limiter.pause_until(clock.monotonic() + 10)
    limiter.acquire()

    assert clock.monotonic_s == pytest.approx(1030.0)


def test_rate_limiter_pause_until_drops_saved_tokens_to_one(clock):
    limiter = make_limiter(5, burst=5, clock=clock)
    clock.sleep(60)
    limiter.pause_until(clock.monotonic() + 30)

    limiter.acquire()
    resumed = clock.monotonic()
    limiter.acquire()

    assert resumed == pytest.approx(1090.0)
    assert clock.monotonic_s == pytest.approx(1090.2)


@pytest.mark.parametrize(
    ("rate", "burst"),
    [(-1, None), (math.nan, None), (math.inf, None), (5, 0), (5, -2), (5, 1.5), (True, None)],
)
def test_rate_limiter_rejects_invalid_arguments(rate, burst):
    with pytest.raises(ValueError):
        throttle.RateLimiter(rate, burst)


def test_rate_limiter_acquire_paces_threads_with_the_real_clock():
    rate = 200.0
    threads_count = 6
    per_thread = 10
    limiter = throttle.RateLimiter(rate)
    granted: list[float] = []
    granted_lock = threading.Lock()

    def worker() -> None:
        for _ in range(per_thread):
            assert limiter.acquire(deadline=time.monotonic() + 10)
            with granted_lock:
                granted.append(time.monotonic())

    started = time.monotonic()
    workers = [threading.Thread(target=worker) for _ in range(threads_count)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=10)
    elapsed = time.monotonic() - started

    assert len(granted) == threads_count * per_thread
    # One token at the start, then one every 1/rate seconds: 59 intervals at least.
    assert elapsed >= (threads_count * per_thread - 1) / rate * 0.95
    assert elapsed < 5.0

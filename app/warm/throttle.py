"""A thread-safe token-bucket rate limiter for outgoing Last.fm requests.

It owns only the pacing of callers that share one bucket; it never performs
I/O, never sleeps while holding its lock, and knows nothing of HTTP.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

# Named as in every log line (logger=app.throttle), whatever the module's place in the package.
logger = logging.getLogger("app.throttle")

# Float refills can land a hair below a whole token; without this slack, and
# without a floor on waits, a caller could be told to sleep for an amount too
# small to move the clock and spin forever.
_TOKEN_EPSILON = 1e-9
_MIN_WAIT_S = 1e-6


class RateLimiter:
    """Token bucket: `rate` tokens a second, up to `burst` saved (default: rate rounded, at least 1).

    A rate of 0 means unlimited; pauses still apply. The bucket starts with
    one token, not a full burst, so over any run of T seconds at most
    1 + rate * T callers get through: a 5/s limiter over 5 minutes never
    allows more than 5 * 300 + burst calls.
    """

    def __init__(
        self,
        rate: float,
        burst: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not math.isfinite(rate) or rate < 0:
            raise ValueError(f"rate {rate!r} is not a finite number of requests per second >= 0")
        if burst is None:
            burst = max(1, round(rate))
        if not isinstance(burst, int) or isinstance(burst, bool) or burst < 1:
            raise ValueError(f"burst {burst!r} is not a whole number >= 1")
        self._rate = float(rate)
        self._burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = 1.0
        self._updated = clock()
        self._paused_until = -math.inf

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> int:
        return self._burst

    def acquire(self, deadline: float | None = None) -> bool:
        """Block until a token is available and take it.

        Return False, without taking a token, as soon as it is clear that none
        would be available before `deadline` (a clock() value).
        """
        while True:
            with self._lock:
                now = self._clock()
                wait = self._take_or_wait(now)
                if wait is None:
                    return True
                wait = max(wait, _MIN_WAIT_S)
                if deadline is not None and now + wait > deadline:
                    return False
            # Sleep outside the lock so other callers (and pause_until) are not blocked.
            self._sleep(wait)

    def pause_until(self, moment: float) -> None:
        """Make every caller wait until clock() >= moment.

        Used when Last.fm answers Retry-After or "rate limit exceeded". Tokens
        saved up before the pause drop to one, and at most one accrues during
        it, so callers do not rush Last.fm in a burst the moment it ends.
        """
        with self._lock:
            self._refill(self._clock())
            if moment > self._paused_until:
                self._paused_until = moment
                self._tokens = min(self._tokens, 1.0)
                logger.debug("rate limiter paused until clock %.3f", moment)

    def _refill(self, now: float) -> None:
        if now <= self._updated:
            return
        if self._rate > 0:
            start = self._updated
            if start < self._paused_until:
                # Time spent paused still earns tokens (so the rate bound holds), but at most one.
                paused_end = min(now, self._paused_until)
                self._tokens = min(1.0, self._tokens + (paused_end - start) * self._rate)
                start = paused_end
            self._tokens = min(float(self._burst), self._tokens + (now - start) * self._rate)
        self._updated = now

    def _take_or_wait(self, now: float) -> float | None:
        """Take a token and return None, or return how long to wait before trying again (lock held)."""
        self._refill(now)
        if now < self._paused_until:
            return self._paused_until - now
        if self._rate == 0:
            return None
        if self._tokens >= 1.0 - _TOKEN_EPSILON:
            self._tokens = max(0.0, self._tokens - 1.0)
            return None
        return (1.0 - self._tokens) / self._rate

"""Jinja filters: every timestamp and untrusted URL on the page is formatted here.

static/relative-time.js words relative times exactly like relative_time, so
a page left open keeps them current; change both together.
"""

from __future__ import annotations

from datetime import datetime

from flask import Flask

from app.core.snapshot import format_time
from app.core.snapshot import profile_url
from app.core.snapshot import safe_image_url
from app.core.snapshot import safe_page_url

# Short and long names of the units, for "3 min ago" and "3 minutes ago".
_MINUTE_WORDS = {False: ("min", "min"), True: ("minute", "minutes")}


def _plural(count: int, singular: str, plural: str) -> str:
    return f"{count} {singular if count == 1 else plural} ago"


def relative_time(moment: datetime, now: datetime, long: bool = False) -> str:
    """Return how long before now moment was, in words ("just now", "3 min ago", "2 days ago").

    long spells minutes out ("3 minutes ago"), for sentences. A moment after
    now (clock skew between hosts) is "just now".
    """
    seconds = (now - moment).total_seconds()
    if seconds < 60:
        return "just now"
    minutes = int(seconds // 60)
    if minutes < 60:
        return _plural(minutes, *_MINUTE_WORDS[long])
    hours = minutes // 60
    if hours < 24:
        return _plural(hours, "hour", "hours")
    return _plural(hours // 24, "day", "days")


def clock_time(moment: datetime) -> str:
    """Return moment as HH:MM UTC."""
    return format_time(moment)[11:16] + " UTC"


def exact_time(moment: datetime) -> str:
    """Return moment for a tooltip: 2026-12-01 07:04 UTC."""
    return format_time(moment)[:16].replace("T", " ") + " UTC"


def update_time(moment: datetime, now: datetime) -> str:
    """Return moment as "07:04 UTC" when less than a day before now, else "2026-12-01 07:04 UTC"."""
    return clock_time(moment) if (now - moment).total_seconds() < 86400 else exact_time(moment)


def initial(name: str) -> str:
    """Return the first letter or digit of name, upper-cased, for a member's badge ("?" if none)."""
    return next((character.upper() for character in name if character.isalnum()), "?")


def hue(name: str, count: int = 6) -> int:
    """Return a stable number below count for name, choosing its badge colour (CSS classes hue-0...)."""
    return sum(name.lower().encode("utf-8")) % count


def init_app(app: Flask) -> None:
    app.add_template_filter(relative_time)
    app.add_template_filter(clock_time)
    app.add_template_filter(exact_time)
    app.add_template_filter(update_time)
    app.add_template_filter(initial)
    app.add_template_filter(hue)
    app.add_template_filter(format_time, "iso_time")
    app.add_template_filter(safe_page_url)
    app.add_template_filter(safe_image_url)
    app.add_template_filter(profile_url)

"""Jinja filters: every timestamp and untrusted URL on the page is formatted here."""

from __future__ import annotations

from datetime import datetime

from flask import Flask

from app.snapshot import format_time
from app.snapshot import profile_url
from app.snapshot import safe_image_url
from app.snapshot import safe_page_url


def relative_time(moment: datetime, now: datetime) -> str:
    """Return how long before now moment was, in words ("just now", "3 min ago", "2 days ago")."""
    seconds = (now - moment).total_seconds()
    if seconds < 60:
        return "just now"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min ago"
    hours = minutes // 60
    if hours < 24:
        return f"{hours} hour{'s' if hours != 1 else ''} ago"
    days = hours // 24
    return f"{days} day{'s' if days != 1 else ''} ago"


def clock_time(moment: datetime) -> str:
    """Return moment as HH:MM UTC."""
    return format_time(moment)[11:16] + " UTC"


def exact_time(moment: datetime) -> str:
    """Return moment for a tooltip: 2026-12-01 07:04 UTC."""
    return format_time(moment)[:16].replace("T", " ") + " UTC"


def init_app(app: Flask) -> None:
    app.add_template_filter(relative_time)
    app.add_template_filter(clock_time)
    app.add_template_filter(exact_time)
    app.add_template_filter(format_time, "iso_time")
    app.add_template_filter(safe_page_url)
    app.add_template_filter(safe_image_url)
    app.add_template_filter(profile_url)

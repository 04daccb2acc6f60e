"""The web app factory: a read-only Flask app over the published snapshot.

It opens no connection at import or creation time; the reader connects
lazily, per worker and thread. The write side (warm, publisher, lastfm,
members) is never imported by serving requests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime

from flask import Flask

from app.core.settings import Settings
from app.core.settings import load_settings
from app.core.snapshot import utc_now
from app.web.reader import SnapshotReader


@dataclasses.dataclass(frozen=True)
class Listens:
    """What the app keeps in app.extensions["listens"]."""

    settings: Settings
    reader: SnapshotReader
    # "Now" for the views (states, relative times): real time, unless a test
    # passes a fixed clock.
    clock: Callable[[], datetime]


def create_app(settings: Settings | None = None, *, clock: Callable[[], datetime] = utc_now) -> Flask:
    """Build the app from settings (default: the environment); clock gives the views' "now"."""
    # Templates and static files live with the web side; they are still served under /static.
    app = Flask(__name__, template_folder="web/templates", static_folder="web/static")
    settings = settings if settings is not None else load_settings()
    reader = SnapshotReader(
        settings.memcached_servers,
        settings.key_prefix,
        settings.fresh_s,
        recheck_s=settings.pointer_recheck_s,
        max_stale_s=settings.max_stale_s,
    )
    app.extensions["listens"] = Listens(settings, reader, clock)

    from app import cli
    from app.web import errors
    from app.web import metrics
    from app.web import views

    views.init_app(app)
    metrics.init_app(app)
    errors.init_app(app)
    cli.init_app(app)
    return app

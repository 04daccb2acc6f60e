"""The home page, the JSON API and the health check: read the snapshot, render it.

Static URLs carry a content hash, so browsers may cache them for a year.

Views only read (through app.reader); they never import the write side.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from datetime import timezone
from pathlib import Path

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import current_app
from flask import jsonify
from flask import render_template
from flask import request
from flask import url_for

from app import filters
from app.reader import Reading
from app.snapshot import SCHEMA_VERSION
from app.snapshot import State
from app.snapshot import format_time
from app.snapshot import track_to_json

bp = Blueprint("listens", __name__)

# The page and the API may be reused briefly by browsers and proxies; the
# snapshot changes at most every few minutes.
PUBLIC_CACHE = "public, max-age=15, stale-while-revalidate=30"

# A static URL carries its file's content hash (?v=), so a new release gets
# new URLs and browsers may keep what they fetched for a year.
STATIC_CACHE = "public, max-age=31536000, immutable"


def _read() -> tuple[Reading, datetime, int]:
    listens = current_app.extensions["listens"]
    now = datetime.now(timezone.utc)
    return listens.reader.read(now), now, listens.settings.items


@bp.get("/")
def home() -> Response:
    reading, now, items = _read()
    tracks = reading.snapshot.tracks[:items] if reading.snapshot is not None else ()
    html = render_template("home.html", reading=reading, tracks=tracks, now=now, State=State)
    return Response(html, headers={"Cache-Control": PUBLIC_CACHE})


@bp.get("/api/internal/user-listens")
def user_listens() -> Response:
    reading, _, items = _read()
    snapshot = reading.snapshot
    response = jsonify(
        data=[track_to_json(track) for track in snapshot.tracks[:items]] if snapshot is not None else [],
        lastUpdated=format_time(snapshot.last_updated) if snapshot is not None else None,
        state=reading.state.value,
        generation=reading.generation,
        version=SCHEMA_VERSION,
        cached=snapshot is not None,
    )
    response.headers["Cache-Control"] = PUBLIC_CACHE
    return response


@bp.get("/healthz")
def healthz() -> Response:
    reading, _, _ = _read()
    snapshot = reading.snapshot
    response = jsonify(
        memcached="reachable" if reading.reachable else "unreachable",
        state=reading.state.value,
        generation=reading.generation,
        lastUpdated=format_time(snapshot.last_updated) if snapshot is not None else None,
        snapshotAgeSeconds=round(reading.age_s) if reading.age_s is not None else None,
    )
    # Monitoring and load balancers read the status: only a page that cannot
    # show data is unhealthy.
    response.status_code = 503 if reading.state is State.UNAVAILABLE else 200
    response.headers["Cache-Control"] = "no-store"
    return response


def static_versions(folder: str | Path) -> dict[str, str]:
    """Return a short content hash of every file under folder, keyed by its path relative to folder."""
    root = Path(folder)
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def static_url(filename: str) -> str:
    """Return the URL of a static file with its content hash, for templates."""
    version = current_app.extensions["static_versions"].get(filename)
    return url_for("static", filename=filename, v=version) if version else url_for("static", filename=filename)


def cache_versioned_static(response: Response) -> Response:
    """Let browsers keep a static file for a year when it was asked for by its current hash."""
    if request.endpoint == "static" and response.status_code == 200:
        version = current_app.extensions["static_versions"].get((request.view_args or {}).get("filename", ""))
        if version is not None and request.args.get("v") == version:
            response.headers["Cache-Control"] = STATIC_CACHE
    return response


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    filters.init_app(app)
    # Hashed once at start-up: a release replaces the files and restarts the workers.
    app.extensions["static_versions"] = static_versions(app.static_folder)
    app.add_template_global(static_url)
    app.after_request(cache_versioned_static)

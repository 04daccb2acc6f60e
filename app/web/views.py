"""The home page, the JSON API and the health check: read the snapshot, render it.

Static URLs carry a content hash, so browsers may cache them for a year.

Views only read (through app.reader); they never import the write side.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from flask import Blueprint
from flask import Flask
from flask import Response
from flask import current_app
from flask import jsonify
from flask import render_template
from flask import request
from flask import url_for
from werkzeug.datastructures import Headers
from werkzeug.http import http_date

from app.core.snapshot import SCHEMA_VERSION
from app.core.snapshot import State
from app.core.snapshot import format_time
from app.core.snapshot import track_to_json
from app.web import filters
from app.web.errors import SECURITY_HEADERS
from app.web.reader import Reading

bp = Blueprint("listens", __name__)

# The page and the API may be reused briefly by browsers and proxies; the
# snapshot changes at most every few minutes.
PUBLIC_CACHE = "public, max-age=15, stale-while-revalidate=30"

# Shared caches (nginx's micro-cache, deploy/nginx/listens.conf) keep an
# answer in the warming or unavailable state, or one shown from a worker's
# memory while memcached is unreachable (stale-if-error, README), for two
# seconds only, so the first answer with data, or recovery, shows at once;
# fresh, stale and empty answers get PUBLIC_CACHE. cache_control() is the one
# place that chooses.
SHORT_CACHE = "public, max-age=2"

# A static URL carries its file's content hash (?v=), so a new release gets
# new URLs and browsers may keep what they fetched for a year.
STATIC_CACHE = "public, max-age=31536000, immutable"


class _RenderedResponse(Response):
    """A response of a Rendered: 200 with a body, or 304, with its own copy of the headers."""

    def get_wsgi_headers(self, environ) -> Headers:
        if self.status_code == 200:
            # werkzeug's version copies (and re-checks) the headers again to
            # fix Location and Content-Length: ours has no Location, its
            # Content-Length was set with the body, and the headers are this
            # response's own copy, so they are sent as they are.
            return self.headers
        return super().get_wsgi_headers(environ)


class Rendered:
    """A response body rendered once and served until its key changes, with its validators."""

    __slots__ = ("key", "body", "etag", "headers")

    def __init__(
        self, key: tuple, body: bytes, mimetype: str, last_modified: datetime | None, cache: str = PUBLIC_CACHE
    ) -> None:
        self.key = key
        self.body = body
        self.etag = hashlib.sha256(body).hexdigest()[:20]
        headers = [("Content-Type", mimetype), ("Cache-Control", cache), ("ETag", f'"{self.etag}"')]
        if last_modified is not None:
            headers.append(("Last-Modified", http_date(last_modified)))
        # Security headers here too, so errors.add_security_headers has nothing to add.
        headers.extend(SECURITY_HEADERS.items())
        self.headers = Headers(headers)

    def respond(self) -> Response:
        # Read (docs/design.md): a snapshot never changes, so what was rendered from
        # it is served again as long as nothing it shows has changed.
        if "HTTP_IF_NONE_MATCH" in request.environ and request.if_none_match.contains_weak(self.etag):
            not_modified = self.headers.copy()
            not_modified.remove("Content-Type")
            return _RenderedResponse(status=304, headers=not_modified)
        return _RenderedResponse(self.body, headers=self.headers.copy())


def cache_control(reading: Reading) -> str:
    """Return the Cache-Control of a page or API answer showing reading."""
    if reading.state in (State.WARMING, State.UNAVAILABLE) or not reading.reachable:
        return SHORT_CACHE
    return PUBLIC_CACHE


def _read() -> tuple[Reading, datetime, int]:
    listens = current_app.extensions["listens"]
    now = listens.clock()
    return listens.reader.read(now), now, listens.settings.items


def _memoised(name: str, key: tuple, render) -> Rendered:
    """Return the memo slot name's Rendered for key, rendering it only when the key changed."""
    memo = current_app.extensions["listens_rendered"]
    rendered = memo.get(name)
    if rendered is None or rendered.key != key:
        rendered = render()
        memo[name] = rendered
    return rendered


def _page_view(name: str, to_html: Callable[[dict], str]) -> Response:
    """Serve HTML from the home template, memoised in slot name; to_html renders it from the template's values."""
    reading, now, items = _read()
    snapshot = reading.snapshot
    # Relative times ("3 min ago") move on once a minute; nothing else on the
    # page changes while the generation and the state stay the same.
    key = (reading.generation, reading.state, reading.reachable, int(now.timestamp() // 60))

    def render() -> Rendered:
        tracks = snapshot.tracks[:items] if snapshot is not None else ()
        values = {"reading": reading, "tracks": tracks, "now": now, "State": State, "refresh_s": _refresh_s()}
        last_modified = snapshot.last_updated if snapshot is not None else None
        html = to_html(values).encode("utf-8")
        return Rendered(key, html, "text/html; charset=utf-8", last_modified, cache_control(reading))

    return _memoised(name, key, render).respond()


@bp.get("/")
def home() -> Response:
    return _page_view("home", _whole_page)


def _whole_page(values: dict) -> str:
    return render_template("home.html", **values)


@bp.get("/api/internal/user-listens")
def user_listens() -> Response:
    reading, _, items = _read()
    snapshot = reading.snapshot

    def render() -> Rendered:
        body = {
            "data": [track_to_json(track) for track in snapshot.tracks[:items]] if snapshot is not None else [],
            "lastUpdated": format_time(snapshot.last_updated) if snapshot is not None else None,
            "state": reading.state.value,
            "generation": reading.generation,
            "version": SCHEMA_VERSION,
            "cached": snapshot is not None,
            "reachable": reading.reachable,
        }
        last_modified = snapshot.last_updated if snapshot is not None else None
        return Rendered(
            key, json.dumps(body).encode("utf-8"), "application/json", last_modified, cache_control(reading)
        )

    # The generation and its tracks come from one snapshot object, so they
    # always belong together.
    key = (reading.generation, reading.state, reading.reachable)
    return _memoised("api", key, render).respond()


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
    # Monitoring and load balancers read the status: a page that cannot show
    # data is unhealthy, and so is memcached out of reach even while this
    # worker still shows the last snapshot it read (stale-if-error).
    response.status_code = 503 if reading.state is State.UNAVAILABLE or not reading.reachable else 200
    response.headers["Cache-Control"] = "no-store"
    return response


def _refresh_s() -> int:
    return current_app.extensions["listens"].settings.refresh_s


@bp.get("/fragment/listens")
def listens_fragment() -> Response:
    """Return the page's listens section alone, for the page's script to update an open page in place.

    It is the home template's main block, so it has the page's markup and
    escaping exactly (docs/page.md, Live refresh); memoised like the page.
    """
    return _page_view("fragment", _main_block)


def _main_block(values: dict) -> str:
    template = current_app.jinja_env.get_template("home.html")
    return "".join(template.blocks["main"](template.new_context(values))).strip()


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


def versioned_static(filename: str) -> Response:
    """Serve a static file; browsers may keep it for a year when asked for by its current hash."""
    response = current_app.send_static_file(filename)
    version = current_app.extensions["static_versions"].get(filename)
    if response.status_code == 200 and version is not None and request.args.get("v") == version:
        response.headers["Cache-Control"] = STATIC_CACHE
    return response


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    # Per worker process: "home", "api" and "fragment" -> the last Rendered of each.
    app.extensions["listens_rendered"] = {}
    filters.init_app(app)
    # Hashed once at start-up: a release replaces the files and restarts the workers.
    app.extensions["static_versions"] = static_versions(app.static_folder)
    app.add_template_global(static_url)
    # Replaces Flask's static view rather than adding an after_request hook
    # that every page request would pay for.
    app.view_functions["static"] = versioned_static

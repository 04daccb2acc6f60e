"""The two comparison apps of the web benchmark, served by gunicorn like ours.

- constant: Flask returning the home page's bytes as a constant string, the
  floor of what any Flask view can cost.
- constant-headers: the same, with the same response headers as ours
  (security headers, validators), which gunicorn pays for per header.
- flask_caching: the usual Flask alternative, Flask-Caching's memcached
  backend with @cache.cached on the view (one memcached get per request).

All read the page from BENCH_PAGE_FILE (and its headers from BENCH_HEADERS_FILE);
Flask-Caching uses LISTENS_MEMCACHED.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from flask import Flask


def _page() -> bytes:
    return Path(os.environ["BENCH_PAGE_FILE"]).read_bytes()


def constant_app() -> Flask:
    app = Flask(__name__)
    page = _page()

    @app.get("/")
    def home():
        return page

    return app


def constant_headers_app() -> Flask:
    app = Flask(__name__)
    page = _page()
    headers = json.loads(Path(os.environ["BENCH_HEADERS_FILE"]).read_text())

    @app.get("/")
    def home():
        return page, 200, headers

    return app


def flask_caching_app() -> Flask:
    from flask_caching import Cache

    app = Flask(__name__)
    page = _page()
    servers = os.environ.get("LISTENS_MEMCACHED", "127.0.0.1:11211").split(",")
    cache = Cache(
        app,
        config={"CACHE_TYPE": "MemcachedCache", "CACHE_MEMCACHED_SERVERS": servers, "CACHE_KEY_PREFIX": "bench-fc:"},
    )

    @app.get("/")
    @cache.cached(timeout=300)
    def home():
        return page

    return app

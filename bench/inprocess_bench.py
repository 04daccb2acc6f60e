"""In-process page benchmark: what a page request costs the Flask app, without gunicorn or sockets.

Publishes one snapshot like bench.web_bench (memcached, the fake Last.fm,
the real warm script), then calls each app's WSGI callable directly with a
plain GET / and reads the whole body: this app, the constant page and the
constant page with our headers (bench/apps.py). Prints the best of --repeat
timings per request, in microseconds, and the ratios. Steadier than req/s on
a shared machine, and it shows what the app adds to the constant page
without gunicorn's own cost per request and per header.

    python -m bench.inprocess_bench [--requests 5000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import timeit
from collections.abc import Callable

from werkzeug.test import EnvironBuilder

from app import create_app
from app.core.settings import load_settings
from bench import apps
from bench.web_bench import published_site


def request_once(wsgi_app: Callable, environ: dict) -> tuple[str, list, bytes]:
    """Serve one request; return its status, headers and body."""
    answer: list = []

    def start_response(status, headers, exc_info=None):
        answer[:] = [status, headers]

    body = wsgi_app(dict(environ), start_response)
    try:
        content = b"".join(body)
    finally:
        if hasattr(body, "close"):
            body.close()
    return answer[0], answer[1], content


def per_request_us(wsgi_app: Callable, environ: dict, requests: int, repeat: int) -> float:
    """Return the best of repeat timings of requests requests, per request, in microseconds."""
    for _ in range(requests // 5):  # warm-up: memos, the reader's connection
        request_once(wsgi_app, environ)
    timings = timeit.repeat(lambda: request_once(wsgi_app, environ), number=requests, repeat=repeat)
    return min(timings) / requests * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per timing (default 5000)")
    parser.add_argument("--repeat", type=int, default=5, help="timings per app, the best is kept (default 5)")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.repeat < 1:
        parser.error("--requests and --repeat must be at least 1")

    with published_site() as (folder, env):
        listens = create_app(load_settings({**os.environ, **env}))
        environ = EnvironBuilder(path="/", headers={"Host": "127.0.0.1"}).get_environ()
        status, headers, page = request_once(listens, environ)
        if not status.startswith("200"):
            print(f"the page answered {status}, not 200: is the snapshot published?", file=sys.stderr)
            return 1
        (folder / "page.html").write_bytes(page)
        kept = [(name, value) for name, value in headers if name.lower() != "content-length"]
        (folder / "headers.json").write_text(json.dumps(kept))
        # bench/apps.py reads the page and the headers from these, as under gunicorn.
        os.environ["BENCH_PAGE_FILE"] = str(folder / "page.html")
        os.environ["BENCH_HEADERS_FILE"] = str(folder / "headers.json")
        candidates = {
            "listens": listens,
            "constant": apps.constant_app(),
            "constant-headers": apps.constant_headers_app(),
        }
        costs = {name: per_request_us(app, environ, args.requests, args.repeat) for name, app in candidates.items()}

    constant, same_headers = costs["constant"], costs["constant-headers"]
    print(
        f"in-process page benchmark, page {len(page)} bytes, {len(kept)} headers, "
        f"best of {args.repeat} x {args.requests} requests"
    )
    print(f"{'app':<17}{'us/request':>12}{'vs constant':>13}{'vs constant-headers':>21}")
    for name, cost in costs.items():
        print(f"{name:<17}{cost:>12.1f}{constant / cost:>12.2f}x{same_headers / cost:>20.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

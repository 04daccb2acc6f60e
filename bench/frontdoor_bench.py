"""Front-door benchmark: the page through nginx's micro-cache, through nginx uncached, from gunicorn, as a static file.

Starts memcached, the fake Last.fm, publishes one snapshot with the real
warm script, and runs gunicorn with deploy/gunicorn.conf.py (2 sync workers,
access log on, as deployed) behind three nginx instances built from
deploy/nginx/listens.conf as the tests build it (tests.support.Nginx): the
site itself; the site with its cache switched off; and a server that sends
the same page bytes, with the same headers, as a static file (the most nginx
can do for this page). Each is loaded with wrk in interleaved rounds, so the
machine's noise falls on all alike. Prints req/s, p50, p99, non-2xx/3xx
answers and the ratios. Loopback only; every process started here is
stopped here.

    python -m bench.frontdoor_bench [--rounds 3] [--duration 5] [--connections 16]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC
from datetime import datetime
from pathlib import Path

import requests

from bench.web_bench import parse_wrk
from bench.web_bench import wrk_missing
from bench.web_bench import wrk_options
from tests.support import NGINX_SITE
from tests.support import SERVER_NAME
from tests.support import FakeLastfm
from tests.support import Gunicorn
from tests.support import MemcachedProcess
from tests.support import Nginx
from tests.support import add_members
from tests.support import run_warm
from tests.support import stack_env

MEMBERS = 40
# The headers the application sends with the page, repeated by the static server.
KEPT_HEADERS = (
    "Cache-Control",
    "Content-Security-Policy",
    "X-Content-Type-Options",
    "Referrer-Policy",
    "X-Frame-Options",
)


def run_wrk(url: str, duration_s: int, connections: int, threads: int) -> dict[str, float]:
    """Load url with wrk, as the site's host name; return req/s, p50, p99 (ms) and non-2xx/3xx answers."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency", "-H", f"Host: {SERVER_NAME}"]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    return parse_wrk(output)


def static_site(folder: Path, page: requests.Response) -> Path:
    """Write the page to folder and a site file that serves it as a static file with the page's headers."""
    (folder / "page.html").write_bytes(page.content)
    headers = "".join(f'        add_header {name} "{page.headers[name]}";\n' for name in KEPT_HEADERS)
    site = folder / "static.conf"
    site.write_text(
        "server {\n"
        "    listen 80;\n"
        f"    server_name {SERVER_NAME};\n"
        "    server_tokens off;\n"
        "    location = / {\n"
        f"        root {folder};\n"
        "        try_files /page.html =404;\n"
        "        default_type text/html;\n"
        "        charset utf-8;\n"
        f"{headers}"
        "    }\n"
        "}\n"
    )
    return site


def uncached_site(folder: Path) -> Path:
    """Write listens.conf with its micro-cache switched off."""
    site = folder / "uncached.conf"
    site.write_text(NGINX_SITE.read_text().replace("proxy_cache listens;", "proxy_cache off;"))
    return site


def main(argv: list[str] | None = None) -> int:
    args = wrk_options(__doc__.splitlines()[0], duration_s=5).parse_args(argv)
    if wrk_missing():
        return 2

    folder = Path(tempfile.mkdtemp(prefix="listens-frontdoor-bench-"))
    cache = MemcachedProcess().start()
    lastfm = FakeLastfm().start()
    processes: list = []
    try:
        env = stack_env(cache.address, lastfm.url, folder / "listens.sqlite3")
        # The production default (the tests' service_env turns it off).
        env["LISTENS_POINTER_RECHECK_SECONDS"] = "0.5"
        add_members(folder / "listens.sqlite3", [f"member{index}" for index in range(MEMBERS)])
        warm = run_warm(env)
        if warm.returncode != 0:
            print(warm.stderr, file=sys.stderr)
            return 1
        gunicorn = Gunicorn(env).start(folder / "gunicorn.log")
        processes.append(gunicorn)
        upstream = f"127.0.0.1:{gunicorn.port}"
        page = requests.get(f"{gunicorn.url}/", timeout=5)
        targets = {"gunicorn direct": f"{gunicorn.url}/"}
        for name, site in (
            ("nginx, cached", NGINX_SITE),
            ("nginx, uncached", uncached_site(folder)),
            ("nginx, static file", static_site(folder, page)),
        ):
            nginx = Nginx(folder / name.replace(", ", "-").replace(" ", "-"), upstream, site=site).start()
            processes.append(nginx)
            answer = requests.get(f"{nginx.url}/", headers={"Host": SERVER_NAME}, timeout=5)
            # The same page (its bytes change with the minute: relative times).
            assert answer.status_code == 200 and 'data-state="fresh"' in answer.text, (name, answer.status_code)
            targets[name] = f"{nginx.url}/"

        results: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        names = list(targets)
        for name in names:  # warm-up: connections, the cache entry, the workers' memos
            run_wrk(targets[name], 1, args.connections, args.threads)
        for round_index in range(args.rounds):
            order = names[round_index % len(names) :] + names[: round_index % len(names)]
            for name in order:
                results[name].append(run_wrk(targets[name], args.duration, args.connections, args.threads))

        summary = {
            name: {key: statistics.median(run[key] for run in runs) for key in ("rps", "p50", "p99")}
            | {"non2xx": sum(run["non2xx"] for run in runs)}
            for name, runs in results.items()
        }
        direct, static = summary["gunicorn direct"], summary["nginx, static file"]
        print(
            f"front-door benchmark {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
            f"page {len(page.content)} bytes, gunicorn 2 sync workers, nginx 2 workers, "
            f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s x {args.rounds} rounds (medians)"
        )
        print(
            f"{'target':<20}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'vs gunicorn':>13}{'vs static':>11}"
        )
        for name, row in summary.items():
            print(
                f"{name:<20}{row['rps']:>10.0f}{row['p50']:>9.2f}{row['p99']:>9.2f}{row['non2xx']:>9.0f}"
                f"{row['rps'] / direct['rps']:>12.2f}x{row['rps'] / static['rps']:>10.2f}x"
            )
    finally:
        for process in reversed(processes):
            process.stop()
        lastfm.stop()
        cache.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

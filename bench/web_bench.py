"""Web benchmark: this app against a constant Flask page and Flask-Caching, side by side.

Starts memcached, the fake Last.fm, publishes one snapshot with the real
warm script, then runs three gunicorns with the same worker settings (2 sync
workers, no access log) and loads each with wrk in interleaved rounds, so
the machine's noise falls on all three alike. Prints req/s, p50, p99, the
workers' CPU time per request (from /proc, steadier than req/s on a shared
machine) and the ratios. Loopback only; every process started here is stopped here.

    python -m bench.web_bench [--rounds 3] [--duration 8] [--connections 16]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from pathlib import Path

import requests

from tests.support import REPO
from tests.support import FakeLastfm
from tests.support import MemcachedProcess
from tests.support import add_members
from tests.support import free_port
from tests.support import run_warm
from tests.support import service_env
from tests.support import wait_until
from tests.support.processes import stop_process

MEMBERS = 40
APPS = {
    "listens": "app:create_app()",
    "constant": "bench.apps:constant_app()",
    "constant-headers": "bench.apps:constant_headers_app()",
    "flask-caching": "bench.apps:flask_caching_app()",
}
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


class Server:
    """gunicorn serving one of APPS with identical worker settings."""

    def __init__(self, name: str, env: dict[str, str], workers: int) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            str(workers),
            "--worker-class",
            "sync",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--no-control-socket",
            "--log-level",
            "warning",
            APPS[name],
        ]
        self.process = subprocess.Popen(
            command, cwd=REPO, env=service_env(env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_until(lambda: requests.get(self.url, timeout=2).status_code == 200, 30, f"{name} on {self.url}", 0.1)
        except BaseException:
            self.stop()
            raise

    def cpu_s(self) -> float:
        """Return the CPU time (user + system) the workers used so far: less noisy than req/s on a shared machine."""
        ticks = 0
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                try:
                    fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
                except FileNotFoundError:
                    continue
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        stop_process(self.process, 30)


def parse_wrk(output: str) -> dict[str, float]:
    """Return requests/s, p50 and p99 latency (ms) and error counts from wrk --latency output."""
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}
    result["requests"] = float(re.search(r"^\s*(\d+) requests in", output, re.M).group(1))
    for label, key in (("50%", "p50"), ("99%", "p99")):
        value, unit = re.search(rf"^\s+{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", output, re.M).groups()
        result[key] = float(value) * _UNITS[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["non2xx"] = float(errors.group(1)) if errors else 0.0
    return result


def run_wrk(url: str, duration_s: int, connections: int, threads: int) -> dict[str, float]:
    output = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_wrk(output)


def wrk_options(description: str, duration_s: int) -> argparse.ArgumentParser:
    """Return a parser with the options of every wrk benchmark: rounds, seconds per run, connections, threads."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=duration_s, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    return parser


def wrk_missing() -> bool:
    """Say on stderr how to install wrk and return True when it is missing."""
    if shutil.which("wrk") is not None:
        return False
    print("error: wrk is not installed; run 'apt-get install wrk' (make bench does this)", file=sys.stderr)
    return True


@contextlib.contextmanager
def published_site() -> Iterator[tuple[Path, dict[str, str]]]:
    """Yield a temporary folder and the settings of a site with one snapshot of MEMBERS published.

    memcached and the fake Last.fm run for the block; the real warm script
    published the snapshot. Everything is stopped and removed afterwards.
    """
    folder = Path(tempfile.mkdtemp(prefix="listens-bench-"))
    try:
        with MemcachedProcess() as cache, FakeLastfm() as lastfm:
            env = {
                "LISTENS_MEMCACHED": cache.address,
                "LISTENS_LASTFM_URL": lastfm.url,
                "LISTENS_DATABASE": str(folder / "listens.sqlite3"),
                "LISTENS_RATE": "0",
                # The production default (service_env turns it off for tests).
                "LISTENS_POINTER_RECHECK_SECONDS": "0.5",
            }
            add_members(folder / "listens.sqlite3", [f"member{index}" for index in range(MEMBERS)])
            warm = run_warm(env)
            if warm.returncode != 0:
                raise RuntimeError(f"the warm run failed: {warm.stderr.strip()}")
            yield folder, env
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = wrk_options(__doc__.splitlines()[0], duration_s=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if wrk_missing():
        return 2

    servers: list[Server] = []
    with published_site() as (folder, env):
        try:
            servers.append(Server("listens", env, args.workers))
            response = requests.get(servers[0].url, timeout=5)
            page = response.content
            (folder / "page.html").write_bytes(page)
            kept = [
                (name, value)
                for name, value in response.headers.items()
                if name.lower() not in ("content-length", "date", "server", "connection")
            ]
            (folder / "headers.json").write_text(json.dumps(kept))
            env["BENCH_PAGE_FILE"] = str(folder / "page.html")
            env["BENCH_HEADERS_FILE"] = str(folder / "headers.json")
            for name in ("constant", "constant-headers", "flask-caching"):
                # One at a time, so the finally below stops those started when a later one fails.
                servers.append(Server(name, env, args.workers))

            results: dict[str, list[dict[str, float]]] = {server.name: [] for server in servers}
            for server in servers:  # warm-up: connections, memos, the Flask-Caching entry
                run_wrk(server.url, 1, args.connections, args.threads)
            for round_index in range(args.rounds):
                order = servers[round_index % len(servers) :] + servers[: round_index % len(servers)]
                for server in order:
                    cpu_before = server.cpu_s()
                    run = run_wrk(server.url, args.duration, args.connections, args.threads)
                    run["cpu_us"] = (server.cpu_s() - cpu_before) * 1e6 / run["requests"]
                    results[server.name].append(run)

            summary = {
                name: {key: statistics.median(run[key] for run in runs) for key in ("rps", "p50", "p99", "cpu_us")}
                | {"non2xx": sum(run["non2xx"] for run in runs)}
                for name, runs in results.items()
            }
            constant, caching, same_headers = summary["constant"], summary["flask-caching"], summary["constant-headers"]
            print(
                f"web benchmark {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, page {len(page)} bytes, "
                f"{args.workers} sync workers, wrk -t{args.threads} -c{args.connections} -d{args.duration}s x {args.rounds} rounds (medians)"
            )
            print(
                f"{'app':<17}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}{'vs constant':>13}{'vs flask-caching':>18}{'p99 vs constant':>17}{'vs constant-headers':>21}{'CPU us/req':>12}{'CPU vs constant':>17}"
            )
            for name, row in summary.items():
                print(
                    f"{name:<17}{row['rps']:>10.0f}{row['p50']:>9.2f}{row['p99']:>9.2f}{row['non2xx']:>9.0f}"
                    f"{row['rps'] / constant['rps']:>12.2f}x{row['rps'] / caching['rps']:>17.2f}x{row['p99'] / constant['p99']:>16.2f}x"
                    f"{row['rps'] / same_headers['rps']:>20.2f}x{row['cpu_us']:>12.0f}{constant['cpu_us'] / row['cpu_us']:>16.2f}x"
                )
        finally:
            for server in servers:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Warm benchmark: one warm run for 100, 1,000 and 10,000 members against a slow fake Last.fm.

The fake Last.fm adds a fixed latency to every call (default 50 ms) and the
rate limit is lifted, so the ideal time is members / concurrency x latency.
Each run is the real warm code in a child process that reports its own
peak RSS. Prints wall time, calls made, calls per second and the ratio to
the ideal; optionally writes a PNG plot of time against members.

    python -m bench.warm_bench [--members 100,1000,10000] [--latency-ms 50] [--plot docs/warm-time.png]
    python -m bench.warm_bench --budget-cycles 3     # 10,000 members at the default budget, 10x faster

The budget check runs real warm cycles for 10,000 members with the default
rate limit and deadline scaled 10x (50 requests/s, 24 s deadline, a cycle
every 30 s), samples the fake Last.fm's request count, and reports the most
calls seen in any 30 s window: the scaled twin of Last.fm's 1,500 calls per
5 minutes.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC
from datetime import datetime
from pathlib import Path

from app.warm import members
from tests.support import REPO
from tests.support import FakeLastfm
from tests.support import MemcachedProcess
from tests.support import service_env

# Runs one warm cycle in this child and prints its own peak RSS (KiB) last.
CHILD = """
import resource, sys
from app.warm import job
from app.core.settings import load_settings
job.configure_logging()
code = job.run(load_settings()).exit_code
print(f"maxrss_kib={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}", file=sys.stderr)
sys.exit(code)
"""


def seed(database: Path, count: int) -> None:
    """Add count public members quickly, in one transaction."""
    members.connect(database).close()
    connection = sqlite3.connect(database)
    now = datetime.now(UTC).isoformat()
    with connection:
        connection.executemany(
            "INSERT INTO members (username, lastfm_username, public, created_at) VALUES (?, ?, 1, ?)",
            ((f"m{index}", f"m{index}", now) for index in range(count)),
        )
    connection.close()


def measure(
    count: int, latency_ms: int, concurrency: int, folder: Path, cache: MemcachedProcess, lastfm: FakeLastfm
) -> dict:
    database = folder / f"members-{count}.sqlite3"
    seed(database, count)
    cache.flush()
    lastfm.control("reset")
    env = {
        "LISTENS_MEMCACHED": cache.address,
        "LISTENS_LASTFM_URL": lastfm.url,
        "LISTENS_DATABASE": str(database),
        "LISTENS_RATE": "0",
        "LISTENS_CONCURRENCY": str(concurrency),
        "LISTENS_DEADLINE_SECONDS": "3600",
    }
    started = time.monotonic()
    child = subprocess.run(
        [sys.executable, "-c", CHILD], cwd=REPO, env=service_env(env), capture_output=True, text=True
    )
    wall_s = time.monotonic() - started
    if child.returncode != 0:
        raise RuntimeError(f"warm run for {count} members exited {child.returncode}:\n{child.stderr[-2000:]}")
    rss_kib = int(child.stderr.rsplit("maxrss_kib=", 1)[1].split()[0])
    calls = lastfm.stats()["requests"]
    ideal_s = count / concurrency * latency_ms / 1000
    return {
        "members": count,
        "wall_s": wall_s,
        "calls": calls,
        "calls_per_s": calls / wall_s,
        "ideal_s": ideal_s,
        "rss_mb": rss_kib / 1024,
    }


def budget_check(
    cycles: int, count: int, folder: Path, cache: MemcachedProcess, lastfm: FakeLastfm, scale: int = 10
) -> dict:
    """Run warm cycles at the default budget scaled by scale; return calls per cycle and the busiest window."""
    database = folder / f"budget-{count}.sqlite3"
    seed(database, count)
    cache.flush()
    lastfm.control("reset")
    lastfm.control("latency", {"ms": 0})
    cycle_s = 300 / scale
    env = {
        "LISTENS_MEMCACHED": cache.address,
        "LISTENS_LASTFM_URL": lastfm.url,
        "LISTENS_DATABASE": str(database),
        "LISTENS_RATE": str(5 * scale),
        "LISTENS_DEADLINE_SECONDS": str(240 / scale),
    }
    samples: list[tuple[float, int]] = []
    per_cycle = []
    started = time.monotonic()
    for cycle in range(cycles):
        begin = started + cycle * cycle_s
        while time.monotonic() < begin:
            samples.append((time.monotonic(), lastfm.stats()["requests"]))
            time.sleep(0.25)
        before = lastfm.stats()["requests"]
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD], cwd=REPO, env=service_env(env), stderr=subprocess.PIPE, text=True
        )
        while child.poll() is None:
            samples.append((time.monotonic(), lastfm.stats()["requests"]))
            time.sleep(0.25)
        child.stderr.close()
        per_cycle.append(lastfm.stats()["requests"] - before)
    samples.append((time.monotonic(), lastfm.stats()["requests"]))
    window_s = cycle_s
    busiest = 0
    for index, (moment, calls) in enumerate(samples):
        later = [value for at, value in samples[index:] if at - moment <= window_s]
        busiest = max(busiest, later[-1] - calls)
    return {"per_cycle": per_cycle, "busiest": busiest, "limit": int(5 * scale * window_s), "window_s": window_s}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4), dpi=110)
    counts = [row["members"] for row in rows]
    axis.plot(counts, [row["wall_s"] for row in rows], "o-", label="measured")
    axis.plot(counts, [row["ideal_s"] for row in rows], "--", label="ideal (members / concurrency x latency)")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("members")
    axis.set_ylabel("warm run wall time (s)")
    axis.set_title("Warm run time against members (fake Last.fm, 50 ms per call)")
    axis.legend()
    axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", default="100,1000,10000")
    parser.add_argument("--latency-ms", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG plot here (needs matplotlib)")
    parser.add_argument(
        "--budget-cycles", type=int, default=0, help="also run this many scaled cycles of 10,000 members"
    )
    args = parser.parse_args(argv)
    counts = [int(value) for value in args.members.split(",")]

    folder = Path(tempfile.mkdtemp(prefix="listens-warm-bench-"))
    cache = MemcachedProcess().start()
    lastfm = FakeLastfm().start("--latency-ms", str(args.latency_ms))
    try:
        rows = [measure(count, args.latency_ms, args.concurrency, folder, cache, lastfm) for count in counts]
        budget = budget_check(args.budget_cycles, 10_000, folder, cache, lastfm) if args.budget_cycles else None
    finally:
        lastfm.stop()
        cache.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"warm benchmark {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: fake Last.fm +{args.latency_ms} ms per call, "
        f"rate limit lifted, concurrency {args.concurrency}"
    )
    print(f"{'members':>8}{'wall s':>9}{'ideal s':>9}{'vs ideal':>10}{'calls':>8}{'calls/s':>9}{'peak RSS MB':>13}")
    for row in rows:
        print(
            f"{row['members']:>8}{row['wall_s']:>9.2f}{row['ideal_s']:>9.2f}{row['wall_s'] / row['ideal_s']:>9.2f}x"
            f"{row['calls']:>8}{row['calls_per_s']:>9.1f}{row['rss_mb']:>13.1f}"
        )
    if budget is not None:
        print(
            f"budget check, 10,000 members, default rate and deadline scaled 10x (cycle {budget['window_s']:g} s): "
            f"calls per cycle {budget['per_cycle']}, most in any {budget['window_s']:g} s window {budget['busiest']} "
            f"(limit {budget['limit']}, the twin of 1,500 per 5 minutes)"
        )
    if args.plot is not None:
        plot(rows, args.plot)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

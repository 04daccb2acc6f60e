"""The warm job's node_exporter textfile: one run's outcome and counts; writing it never fails the run.

After every run, whatever its outcome, the file is replaced atomically
(prometheus_client.write_to_textfile writes a temporary file beside it, then
renames it), so node_exporter reads the previous run's file or this one's,
never half of one. The last success and the last published generation are
carried over from the previous file when this run did not publish.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client import Gauge
from prometheus_client import write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from app.warm import lastfm

# Named as in every log line (logger=app.warm_metrics), whatever the module's place in the package.
logger = logging.getLogger("app.warm_metrics")

# Every outcome a run can have (README, Operations; job.Outcome, in its order); one is 1, the others 0.
OUTCOMES = ("published", "superseded", "locked", "leased", "failed", "restored", "config", "error")
MEMBER_RESULTS = ("fetched", "carried", "dropped", "failed", "deferred")
# Outcomes after which the run's own snapshot is current.
MADE_CURRENT = ("published", "restored")

LAST_SUCCESS = "listens_warm_last_success_timestamp_seconds"
PUBLISHED_GENERATION = "listens_warm_published_generation"
CONSECUTIVE_FAILURES = "listens_warm_consecutive_failures"

# node_exporter runs as another user (prometheus): the file must be readable
# by all, whatever the service's UMask= (0077, for the database).
FILE_UMASK = 0o022


class _CallsSinceLastRun:
    """Last.fm requests of this process since the previous run's metrics: the run's own calls.

    A process runs its warm runs one after another (the script: one), and
    every run ends in write_run_metrics, which takes the count.
    """

    def __init__(self) -> None:
        self._reported = 0

    def take(self) -> int:
        total = lastfm.REQUESTS_SENT.value
        calls, self._reported = total - self._reported, total
        return calls


_calls = _CallsSinceLastRun()


def read_previous(path: Path) -> dict[str, float]:
    """Return the carried-over values of the previous file at path; empty when it is missing or unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
        families = list(text_string_to_metric_families(text))
    except (OSError, ValueError, UnicodeDecodeError):
        # First run, or a file someone broke: start again from nothing.
        return {}
    kept = (LAST_SUCCESS, PUBLISHED_GENERATION, CONSECUTIVE_FAILURES)
    return {sample.name: sample.value for family in families for sample in family.samples if sample.name in kept}


def build_registry(result, previous: dict[str, float], lastfm_calls: int, now: float) -> CollectorRegistry:
    """Return a registry holding the gauges of one run (result: a warm.RunResult)."""
    registry = CollectorRegistry()

    def gauge(name: str, documentation: str, value: float) -> None:
        Gauge(name, documentation, registry=registry).set(value)

    published = result.outcome == "published"
    gauge("listens_warm_last_run_timestamp_seconds", "When the last warm run ended, in seconds since the epoch.", now)
    gauge(
        LAST_SUCCESS,
        "When a warm run last published a snapshot, in seconds since the epoch (0: never).",
        now if published else previous.get(LAST_SUCCESS, 0),
    )
    gauge("listens_warm_duration_seconds", "How long the last warm run took.", result.duration_s)
    gauge("listens_warm_exit_code", "The last warm run's exit code: 0 ok, 1 failed, 2 configuration.", result.exit_code)
    gauge(
        CONSECUTIVE_FAILURES,
        "Warm runs in a row that exited non-zero, up to the last one (0 after a run that exited 0).",
        previous.get(CONSECUTIVE_FAILURES, 0) + 1 if result.exit_code != 0 else 0,
    )
    members = Gauge(
        "listens_warm_members",
        "Public members by how the last run fared: fetched, dropped, failed and deferred add up to the"
        " members; carried are the failed or deferred ones whose last known track was kept.",
        ["result"],
        registry=registry,
    )
    for name in MEMBER_RESULTS:
        members.labels(name).set(getattr(result, name))
    gauge("listens_warm_lastfm_calls", "Requests the last warm run sent to Last.fm, retries included.", lastfm_calls)
    gauge(
        PUBLISHED_GENERATION,
        "Generation of the snapshot the warm job last made current (0: none yet).",
        result.generation if result.outcome in MADE_CURRENT else previous.get(PUBLISHED_GENERATION, 0),
    )
    outcome = Gauge(
        "listens_warm_outcome", "1 for the last warm run's outcome, 0 for the others.", ["outcome"], registry=registry
    )
    for name in OUTCOMES:
        outcome.labels(name).set(1 if name == result.outcome else 0)
    return registry


def write_run_metrics(path: Path | None, result, *, clock: Callable[[], float] = time.time) -> None:
    """Write the textfile of one finished run to path (None: none); log one WARNING if that fails."""
    lastfm_calls = _calls.take()
    if path is None:
        return
    registry = build_registry(result, read_previous(path), lastfm_calls, clock())
    previous_umask = os.umask(FILE_UMASK)
    try:
        write_to_textfile(str(path), registry)
    except OSError as error:
        # The metrics must never change what the run did or its exit code.
        logger.warning(
            "cannot write the metrics file %s: %s; the run's outcome is unchanged."
            " Make its directory writable for this user, or set LISTENS_METRICS_FILE (empty: none)",
            path,
            error.strerror or error,
        )
    finally:
        os.umask(previous_umask)

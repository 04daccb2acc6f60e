"""GET /metrics: what this worker's reader sees, in Prometheus text format; it never writes to memcached.

The values are computed at scrape time from one reader.read(), so each
gunicorn worker answers on its own and no multiprocess mode is needed. The
route is for the monitoring network only: nginx denies it from outside, and
Prometheus scrapes gunicorn's loopback bind (README, Operating it).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from datetime import datetime

from flask import Flask
from flask import Response
from flask import current_app
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client import GC_COLLECTOR
from prometheus_client import PLATFORM_COLLECTOR
from prometheus_client import PROCESS_COLLECTOR
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry

from app.core.snapshot import State
from app.core.snapshot import utc_now
from app.web.reader import SnapshotReader


class ReaderCollector:
    """Collect the listens_* gauges from one read of the snapshot reader."""

    def __init__(self, reader: SnapshotReader, now: Callable[[], datetime] = utc_now) -> None:
        self._reader = reader
        self._now = now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        reading = self._reader.read(self._now())
        snapshot = reading.snapshot
        state = GaugeMetricFamily(
            "listens_state", "1 for the state the page shows now, 0 for the others.", labels=["state"]
        )
        for each in State:
            state.add_metric([each.value], 1.0 if each is reading.state else 0.0)
        yield state
        yield GaugeMetricFamily(
            "listens_memcached_up",
            "1 if memcached answered this worker's last read, else 0.",
            value=1.0 if reading.reachable else 0.0,
        )
        yield GaugeMetricFamily(
            "listens_snapshot_tracks",
            "Tracks in the snapshot shown (0 when none is shown).",
            value=len(snapshot.tracks) if snapshot is not None else 0,
        )
        # Absent while no snapshot is shown (warming, unavailable): an age or
        # a generation of 0 would look like real data.
        if snapshot is not None:
            yield GaugeMetricFamily(
                "listens_snapshot_age_seconds",
                "Seconds since the shown snapshot's newest successful fetch (its lastUpdated).",
                value=reading.age_s,
            )
            yield GaugeMetricFamily(
                "listens_snapshot_generation",
                "Generation of the shown snapshot: its warm run's start, in microseconds since the epoch.",
                value=snapshot.generation,
            )

    def describe(self) -> list:
        # Registering must not read memcached; the names are checked at scrape time.
        return []


def build_registry(reader: SnapshotReader) -> CollectorRegistry:
    """Return a registry of the reader's gauges and the standard process_* and python_* collectors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReaderCollector(reader))
    # The default registry's own collectors: stateless, they read /proc and
    # the interpreter at each scrape.
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


def metrics() -> Response:
    body = generate_latest(current_app.extensions["listens_metrics"])
    # Text format 0.0.4: what every Prometheus 2.x parses, and what
    # prometheus_client's own exporters send unless asked for another.
    response = Response(body, content_type=CONTENT_TYPE_PLAIN_0_0_4)
    # Every scrape must reach the worker: never a copy from a cache in between.
    response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    app.extensions["listens_metrics"] = build_registry(app.extensions["listens"].reader)
    app.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])

"""Load while publishing: 32 loopback clients against gunicorn while the warm job publishes every second."""

from __future__ import annotations

import re
import threading
import time

import requests

from tests.support.stack import API_PATH
from tests.support.warmlog import summary_of

CLIENTS = 32
TARGET_REQUESTS = 20_000
MIN_PUBLISHES = 10
PUBLISH_INTERVAL_S = 1.0
MAX_DURATION_S = 60.0
MEMBERS = tuple(f"listener{index:02d}" for index in range(10))
SHOWN_STATES = {"fresh", "stale"}
MAX_FAILURES_KEPT = 20

_GENERATION_MARK = re.compile(r"gen-(\d+)")


def generation_track(index: int) -> dict:
    """Return the track every member plays in warm run index: its name says which run fetched it."""
    return {
        "artist": "Load",
        "album": "Test",
        "name": f"gen-{index}",
        "url": f"https://www.last.fm/music/Load/_/gen-{index}",
        "image": "",
    }


class Publisher(threading.Thread):
    """Run the warm script about once a second, each run serving a new track name; map generation -> run."""

    def __init__(self, stack, stop: threading.Event) -> None:
        super().__init__(name="publisher", daemon=True)
        self.stack, self.stop = stack, stop
        self.published: dict[int, int] = {}
        self.failures: list[str] = []

    def publish(self, index: int) -> None:
        self.stack.lastfm.control("all", {"mode": "track", "track": generation_track(index)})
        run = self.stack.warm()
        summary = summary_of(run.stderr)
        if run.returncode != 0 or summary["outcome"] != "published":
            self.failures.append(run.stderr)
            return
        self.published[int(summary["generation"])] = index

    def run(self) -> None:
        started = time.monotonic()
        index = 1
        while not self.stop.is_set():
            try:
                self.publish(index)
            except Exception as error:  # reported by the test, never lost in a thread
                self.failures.append(repr(error))
            index += 1
            # Pacing, not synchronisation: aim for one publish per interval.
            self.stop.wait(max(0.0, started + index * PUBLISH_INTERVAL_S - time.monotonic()))


class Visitor(threading.Thread):
    """Alternate API and page requests on one session; check every response; keep what was seen."""

    def __init__(self, url: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url, self.stop = url, stop
        self.requests = 0
        self.failures: list[str] = []
        self.failure_count = 0
        self.seen: set[tuple[int, int]] = set()  # (API generation, warm run its tracks came from)

    def fail(self, what: str) -> None:
        self.failure_count += 1
        if len(self.failures) < MAX_FAILURES_KEPT:
            self.failures.append(what)

    def check_api(self, response: requests.Response) -> None:
        body = response.json()
        runs = {int(_GENERATION_MARK.fullmatch(item["track"]).group(1)) for item in body["data"]}
        if body["state"] not in SHOWN_STATES or not body["data"] or len(runs) != 1:
            self.fail(f"API: {body['state']} generation={body['generation']} runs={sorted(runs)} in {response.elapsed}")
            return
        self.seen.add((body["generation"], runs.pop()))

    def check_page(self, response: requests.Response) -> None:
        state = re.search(r'data-state="(\w+)"', response.text)
        runs = set(_GENERATION_MARK.findall(response.text))
        listed = re.search(r"<li[ >]", response.text) is not None
        if state is None or state.group(1) not in SHOWN_STATES or not listed or len(runs) != 1:
            self.fail(f"page: state={state and state.group(1)} runs={sorted(runs)} in {response.elapsed}")

    def run(self) -> None:
        with requests.Session() as session:
            while not self.stop.is_set():
                path = API_PATH if self.requests % 2 == 0 else "/"
                started = time.monotonic()
                try:
                    response = session.get(self.url + path, timeout=10)
                    self.requests += 1
                    if response.status_code != 200:
                        self.fail(f"{path}: HTTP {response.status_code} after {time.monotonic() - started:.3f} s")
                    elif path == API_PATH:
                        self.check_api(response)
                    else:
                        self.check_page(response)
                except Exception as error:  # counted as a failure, never lost in a thread
                    self.fail(f"{path}: {error!r} after {time.monotonic() - started:.3f} s")


def test_load_while_publishing_every_second_serves_only_whole_generations(make_stack, record_property):
    stack = make_stack(members=MEMBERS)
    stack.lastfm.control("all", {"mode": "track", "track": generation_track(0)})
    stop = threading.Event()
    publisher = Publisher(stack, stop)
    publisher.published[int(stack.warm_ok()["generation"])] = 0
    visitors = [Visitor(stack.web.url, stop) for index in range(CLIENTS)]

    started = time.monotonic()
    publisher.start()
    for visitor in visitors:
        visitor.start()
    try:
        while time.monotonic() - started < MAX_DURATION_S:
            total = sum(visitor.requests for visitor in visitors)
            if total >= TARGET_REQUESTS and len(publisher.published) > MIN_PUBLISHES:
                break
            stop.wait(0.1)
    finally:
        stop.set()
        for visitor in visitors:
            visitor.join(timeout=30)
        publisher.join(timeout=60)
    duration = time.monotonic() - started

    total = sum(visitor.requests for visitor in visitors)
    publishes = len(publisher.published) - 1
    record_property("requests", total)
    record_property("duration_s", round(duration, 1))
    record_property("requests_per_s", round(total / duration))
    record_property("publishes", publishes)
    rate = total / duration
    print(f"load: {total} requests in {duration:.1f} s ({rate:.0f}/s), {CLIENTS} clients, {publishes} publishes")
    assert not publisher.failures, publisher.failures[:3]
    failures = [failure for visitor in visitors for failure in visitor.failures]
    warnings = [line for line in stack.log().splitlines() if "unavailable" in line or "invalid" in line]
    assert sum(visitor.failure_count for visitor in visitors) == 0, (failures, warnings[:10])
    assert total >= TARGET_REQUESTS and publishes >= MIN_PUBLISHES
    # Every API answer's generation is the run its tracks came from: never one generation's
    # number over another's tracks.
    seen = set().union(*(visitor.seen for visitor in visitors))
    assert {(generation, publisher.published.get(generation)) for generation, _ in seen} == seen
    assert len({generation for generation, _ in seen}) > MIN_PUBLISHES // 2  # readers followed the publishes
    assert "Traceback" not in stack.log()

"""GET /metrics through the app's test client over a real memcached: the stale and empty states, and the age."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import cache
from app import publisher
from app.snapshot import Snapshot
from app.snapshot import Track
from app.snapshot import generation_from

pytestmark = pytest.mark.integration


def publish(settings, *, age: timedelta, tracks: int) -> Snapshot:
    updated = datetime.now(UTC) - age
    track = Track(
        username="alice",
        lastfm_username="alice",
        artist="Low",
        album="Things We Lost in the Fire",
        track="Sunflower",
        url="https://www.last.fm/music/Low/_/Sunflower",
        image="",
        played_at=updated,
        now_playing=False,
        fetched_at=updated,
    )
    snapshot = Snapshot(generation=generation_from(updated), last_updated=updated, tracks=(track,) * tracks, stats={})
    client = cache.connect(settings.memcached_servers, timeout_ms=cache.WRITER_TIMEOUT_MS)
    assert publisher.publish_snapshot(client, settings.key_prefix, snapshot, expiry_s=3600).value == "published"
    return snapshot


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


@pytest.mark.parametrize(
    ("state", "age", "tracks"), [("stale", timedelta(hours=2), 3), ("empty", timedelta(minutes=1), 0)]
)
def test_metrics_report_the_state_age_generation_and_tracks(client, memcached, settings, state, age, tracks):
    snapshot = publish(settings, age=age, tracks=tracks)

    samples = scrape(client)

    states = {labels[0][1]: value for (name, labels), value in samples.items() if name == "listens_state"}
    assert states == {
        each: 1.0 if each == state else 0.0 for each in ("warming", "fresh", "stale", "empty", "unavailable")
    }
    assert samples[("listens_memcached_up", ())] == 1.0
    assert samples[("listens_snapshot_generation", ())] == snapshot.generation
    assert samples[("listens_snapshot_tracks", ())] == tracks
    assert abs(samples[("listens_snapshot_age_seconds", ())] - age.total_seconds()) < 60

"""GET /metrics through the app's test client over a real memcached: the stale and empty states, and the age."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core.snapshot import Snapshot
from tests import support


def publish(settings, *, age: timedelta, tracks: int) -> Snapshot:
    """Publish a snapshot whose newest fetch is age old, as the warm job would."""
    return support.publish_aged(settings, settings.key_prefix, age=age, tracks=tracks)


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

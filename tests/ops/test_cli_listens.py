"""`flask --app app listens status|warm|purge-legacy` through Flask's CliRunner, against a real memcached."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from datetime import UTC
from datetime import datetime
from datetime import timedelta

import pytest

from app import create_app
from app.core.snapshot import Snapshot
from app.core.snapshot import format_time
from app.core.snapshot import legacy_keys
from app.core.snapshot import pointer_key
from app.core.snapshot import snapshot_key
from tests import support
from tests.support import MemcachedProcess
from tests.support.lastfm_stub import LastfmStub
from tests.support.lastfm_stub import recent_payload
from tests.support.memcached import cache_get
from tests.support.memcached import cache_set
from tests.support.warmlog import parse_summary
from tests.support.warmlog import summary_of

PREFIX = "user-listens"


@pytest.fixture
def restore_logging():
    """Undo `listens warm`'s logging set-up, which points the root logger at the runner's stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def add_members(settings, *names: str) -> None:
    support.add_members(settings.database, names)


def answer_everyone(stub: LastfmStub, *names: str) -> None:
    played = datetime.now(UTC) - timedelta(minutes=3)
    for name in names:
        stub.answers[name] = recent_payload(name, "Low", "Words", played=played)


def publish(settings, *, age: timedelta, tracks: int = 1) -> Snapshot:
    """Publish a snapshot whose newest fetch is age old, as the warm job would."""
    return support.publish_aged(settings, PREFIX, age=age, tracks=tracks)


def status_fields(output: str) -> dict[str, str]:
    fields = {}
    for line in output.splitlines():
        label, separator, value = line.partition(":")
        if separator:
            fields[label] = value.strip()
    return fields


def status(runner) -> tuple[int, dict[str, str]]:
    """Run `listens listens status`; return its exit code and its fields."""
    result = runner.invoke(args=["listens", "status"])
    return result.exit_code, status_fields(result.stdout)


def stored_bytes(address: str, key: str) -> int:
    return len(cache_get(address, key))


def test_warm_then_status_exits_0_and_reports_the_published_snapshot(
    runner, memcached, settings, stub, restore_logging
):
    add_members(settings, "alice", "bob", "carol")
    answer_everyone(stub, "alice", "bob", "carol")

    warm = runner.invoke(args=["listens", "warm"])
    status = runner.invoke(args=["listens", "status"])

    assert warm.exit_code == 0, warm.output
    summary = summary_of(warm.stderr)
    assert summary["outcome"] == "published"
    generation = int(summary["generation"])
    assert status.exit_code == 0, status.output
    fields = status_fields(status.stdout)
    assert fields["state"] == "fresh"
    assert fields["memcached"] == f"{memcached.address} reachable"
    assert fields["pointer"] == f"{pointer_key(PREFIX)} -> generation {generation}, previous -"
    assert fields["generation"] == str(generation)
    assert fields["tracks"] == "3"
    assert re.fullmatch(r"\d+ s", fields["age"])
    size = stored_bytes(memcached.address, snapshot_key(PREFIX, generation))
    assert fields["snapshot"] == f"{snapshot_key(PREFIX, generation)}, {size} bytes"
    assert fields["legacy keys"] == "none"
    assert f"warm outcome=published generation={generation} members=3 fetched=3" in fields["last run"]


def test_status_exits_0_when_empty(runner, memcached, settings):
    publish(settings, age=timedelta(minutes=1), tracks=0)

    code, fields = status(runner)

    assert code == 0, fields
    assert fields["state"] == "empty"


def test_status_exits_1_when_stale(runner, memcached, settings):
    snapshot = publish(settings, age=timedelta(hours=2))

    code, fields = status(runner)

    assert code == 1
    assert fields["state"] == "stale"
    assert fields["generation"] == str(snapshot.generation)
    assert 7190 <= int(fields["age"].split()[0]) <= 7260


def test_status_exits_1_when_warming(runner, memcached, settings):
    code, fields = status(runner)

    assert code == 1
    assert fields["state"].startswith("warming")
    assert fields["pointer"] == f"{pointer_key(PREFIX)} missing"
    assert fields["snapshot"] == "-" and fields["tracks"] == "-"


def test_status_exits_1_when_memcached_refuses(runner, settings):
    # Without the memcached fixture, settings name 127.0.0.1:1, where nothing listens.
    code, fields = status(runner)

    assert code == 1
    assert fields["state"].startswith("unavailable")
    assert fields["memcached"] == "127.0.0.1:1 UNREACHABLE"
    assert fields["pointer"].startswith(f"{pointer_key(PREFIX)} unknown")
    assert fields["legacy keys"].startswith("unknown")


def test_status_exits_1_quickly_when_memcached_hangs(settings):
    server = MemcachedProcess().start()
    try:
        hung = dataclasses.replace(settings, memcached_servers=(server.address,))
        publish(hung, age=timedelta(minutes=1))
        runner = create_app(hung).test_cli_runner()
        server.pause()
        started = time.monotonic()
        result = runner.invoke(args=["listens", "status"])
        elapsed = time.monotonic() - started
    finally:
        server.stop()

    assert result.exit_code == 1
    assert status_fields(result.stdout)["state"].startswith("unavailable")
    assert elapsed < 3


def test_status_reports_legacy_keys_and_purge_legacy_deletes_only_them(runner, memcached, settings):
    snapshot = publish(settings, age=timedelta(minutes=1))
    for key in legacy_keys(PREFIX):
        cache_set(memcached.address, key, b"[]")

    before = runner.invoke(args=["listens", "status"])
    purge = runner.invoke(args=["listens", "purge-legacy"])
    again = runner.invoke(args=["listens", "purge-legacy"])
    after = runner.invoke(args=["listens", "status"])

    assert before.exit_code == 0, before.output
    assert status_fields(before.stdout)["legacy keys"] == (
        f"{PREFIX}:recent, {PREFIX}:v2:recent (remove with 'listens listens purge-legacy')"
    )
    assert purge.exit_code == 0 and purge.stdout.strip() == f"deleted {PREFIX}:recent, {PREFIX}:v2:recent"
    assert again.exit_code == 0 and again.stdout.strip() == "no legacy keys found"
    assert after.exit_code == 0 and status_fields(after.stdout)["legacy keys"] == "none"
    for key in legacy_keys(PREFIX):
        assert cache_get(memcached.address, key) is None
    assert status_fields(after.stdout)["generation"] == str(snapshot.generation)
    assert cache_get(memcached.address, pointer_key(PREFIX)) is not None


def test_purge_legacy_exits_1_when_memcached_refuses(runner, settings):
    result = runner.invoke(args=["listens", "purge-legacy"])

    assert result.exit_code == 1
    assert "memcached failed purging" in result.output


def test_status_shows_last_run_summary_when_last_run_failed(runner, memcached, settings, stub, restore_logging):
    add_members(settings, "alice", "bob")
    stub.fail_everyone()

    warm = runner.invoke(args=["listens", "warm"])
    status = runner.invoke(args=["listens", "status"])

    assert warm.exit_code == 1
    assert status.exit_code == 1
    last_run = status_fields(status.stdout)["last run"]
    summary = parse_summary(last_run)
    assert (summary["outcome"], summary["failed"], summary["exit"]) == ("failed", "2", "1")


def test_status_says_where_runs_are_recorded_when_no_database(runner, memcached, settings):
    publish(settings, age=timedelta(minutes=1))

    code, fields = status(runner)

    assert code == 0, fields
    assert fields["last run"].startswith("none recorded here (no database at")
    assert not settings.database.exists()


def test_status_creates_nothing_in_an_empty_members_database(runner, memcached, settings):
    # A report, not a writer: even an empty file is left as it is for the warm job to set up.
    settings.database.parent.mkdir(parents=True, exist_ok=True)
    settings.database.touch()
    publish(settings, age=timedelta(minutes=1))

    code, fields = status(runner)

    assert code == 0, fields
    assert fields["last run"] == "none recorded"
    assert settings.database.stat().st_size == 0


def test_warm_exits_2_without_api_key_for_the_real_lastfm(settings):
    real = dataclasses.replace(settings, lastfm_api_key=None, lastfm_url="https://ws.audioscrobbler.com/2.0/")
    app = create_app(real)

    result = app.test_cli_runner().invoke(args=["listens", "warm"])

    assert result.exit_code == 2
    assert "LASTFM_API_KEY is not set" in result.output


def status_json(runner) -> tuple[int, dict]:
    result = runner.invoke(args=["listens", "status", "--json"])
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.output
    return result.exit_code, json.loads(lines[0])


@pytest.mark.parametrize(
    ("state", "age", "tracks", "exit_code"),
    [("fresh", timedelta(minutes=1), 2, 0), ("empty", timedelta(minutes=1), 0, 0), ("stale", timedelta(hours=2), 1, 1)],
)
def test_status_json_says_what_status_says_with_the_same_exit_code(
    runner, memcached, settings, state, age, tracks, exit_code
):
    snapshot = publish(settings, age=age, tracks=tracks)

    text = runner.invoke(args=["listens", "status"])
    code, facts = status_json(runner)

    fields = status_fields(text.stdout)
    assert text.exit_code == code == exit_code
    assert facts["state"] == fields["state"] == state and facts["reason"] is None
    assert facts["memcached"] == {"servers": [memcached.address], "reachable": True}
    assert facts["generation"] == snapshot.generation == int(fields["generation"])
    assert facts["lastUpdated"] == format_time(snapshot.last_updated)
    assert abs(facts["ageSeconds"] - age.total_seconds()) < 60
    assert facts["tracks"] == tracks == int(fields["tracks"])
    for key, label in (("pointer", "pointer"), ("snapshot", "snapshot"), ("legacyKeys", "legacy keys")):
        assert facts[key] == fields[label]
    assert facts["lastRun"].startswith("none recorded")


def test_status_json_when_warming_has_nulls_and_exits_1(runner, memcached, settings):
    code, facts = status_json(runner)

    assert code == 1
    assert facts["state"] == "warming" and facts["reason"] == "no snapshot published yet"
    assert facts["memcached"]["reachable"] is True
    assert facts["pointer"] == f"{pointer_key(PREFIX)} missing"
    assert [facts[key] for key in ("generation", "lastUpdated", "ageSeconds", "tracks", "snapshot")] == [None] * 5


def test_status_json_when_memcached_refuses_says_unreachable_and_exits_1(runner, settings):
    code, facts = status_json(runner)

    assert code == 1
    assert facts["state"] == "unavailable"
    assert facts["memcached"] == {"servers": ["127.0.0.1:1"], "reachable": False}
    assert facts["legacyKeys"].startswith("unknown")

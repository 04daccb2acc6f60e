"""Prometheus metrics as an operator scrapes them: gunicorn's /metrics and the warm job's textfile.

Real memcached, gunicorn with deploy/gunicorn.conf.py, the fake Last.fm and
scripts/warm_listens.py as processes; the values are read with
prometheus_client's own parser.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.warm.metrics import MEMBER_RESULTS
from app.warm.metrics import OUTCOMES
from tests.support import Gunicorn
from tests.support import add_members
from tests.support import run_warm
from tests.support import stack_env
from tests.support.memcached import WRITE_COUNTERS
from tests.support.memcached import memcached_stats
from tests.support.stack import Stack
from tests.support.stack import pointer_at
from tests.support.stack import stack_fixture
from tests.support.warmlog import summary_of

MEMBERS = ("alice", "bob", "carol", "dave", "erin")
STATES = ("warming", "fresh", "stale", "empty", "unavailable")
PROCESS_AND_PYTHON = ("process_resident_memory_bytes", "process_cpu_seconds_total", "python_info")
WARNING = "cannot write the metrics file"


def parse(text: str) -> dict[tuple[str, tuple], float]:
    """Return {(sample name, sorted labels): value} of a Prometheus text exposition."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def names(samples: dict) -> set[str]:
    return {name for name, _ in samples}


# memcached and the fake Last.fm; each test starts the gunicorn it needs, so no worker remembers another's snapshot.
stack = stack_fixture("metrics", web=False)


@pytest.fixture
def site(stack, tmp_path):
    """A fresh database with MEMBERS, an empty cache, and a textfile path in a directory that exists."""
    stack.reset()
    database = tmp_path / "listens.sqlite3"
    add_members(database, MEMBERS)
    textfile = tmp_path / "node-exporter" / "listens_warm.prom"
    textfile.parent.mkdir()
    env = stack_env(stack.cache.address, stack.lastfm.url, database, LISTENS_METRICS_FILE=str(textfile))
    return {
        "cache": stack.cache,
        "lastfm": stack.lastfm,
        "env": env,
        "database": database,
        "textfile": textfile,
        "tmp": tmp_path,
    }


@pytest.fixture
def web(site):
    server = Gunicorn(site["env"], workers=1).start(site["tmp"] / "gunicorn.log")
    yield server
    server.stop()


def scrape(web: Gunicorn) -> dict:
    response = requests.get(f"{web.url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert response.headers["Cache-Control"] == "no-store"
    return parse(response.text)


def warm(env: dict[str, str], *, umask: int | None = None, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return run_warm(env, prefix=prefix, umask=umask)


def current_generation(site) -> int:
    return pointer_at(site["cache"].address).generation


def assert_one_state(samples: dict, state: str) -> None:
    assert {each: value(samples, "listens_state", state=each) for each in STATES} == {
        each: 1.0 if each == state else 0.0 for each in STATES
    }


def assert_without_snapshot(samples: dict, state: str, memcached_up: float) -> None:
    """Assert a scrape in state, from a worker that holds no snapshot: no tracks, no age, no generation."""
    assert_one_state(samples, state)
    assert value(samples, "listens_memcached_up") == memcached_up
    assert value(samples, "listens_snapshot_tracks") == 0.0
    assert "listens_snapshot_age_seconds" not in names(samples)
    assert "listens_snapshot_generation" not in names(samples)
    assert set(PROCESS_AND_PYTHON) <= names(samples)


# -- GET /metrics -----------------------------------------------------------------------------------------------------


def test_metrics_while_warming_on_an_empty_cache(site, web):
    samples = scrape(web)

    assert_without_snapshot(samples, "warming", memcached_up=1.0)


def test_metrics_when_fresh_after_a_warm_run(site, web):
    run = warm(site["env"])
    assert run.returncode == 0, run.stderr

    samples = scrape(web)

    assert_one_state(samples, "fresh")
    assert value(samples, "listens_memcached_up") == 1.0
    assert value(samples, "listens_snapshot_generation") == current_generation(site)
    assert value(samples, "listens_snapshot_tracks") == len(MEMBERS)
    # The fake's tracks were fetched during the run, seconds ago.
    assert 0 <= value(samples, "listens_snapshot_age_seconds") < 120
    assert set(PROCESS_AND_PYTHON) <= names(samples)
    health = requests.get(f"{web.url}/healthz", timeout=5).json()
    assert health["generation"] == value(samples, "listens_snapshot_generation")


def test_metrics_when_memcached_is_stopped(tmp_path):
    # A memcached of its own, stopped under a worker that never saw a snapshot.
    with Stack(tmp_path / "stopped", workers=1) as stopped:
        stopped.cache.stop()
        samples = scrape(stopped.web)

    assert_without_snapshot(samples, "unavailable", memcached_up=0.0)


def test_metrics_scrapes_leave_write_counters_unchanged(site, web):
    assert warm(site["env"]).returncode == 0
    before = memcached_stats(site["cache"].address)

    for _index in range(20):
        scrape(web)

    after = memcached_stats(site["cache"].address)
    assert after["cmd_get"] > before["cmd_get"]
    assert {name: after[name] - before[name] for name in WRITE_COUNTERS} == dict.fromkeys(WRITE_COUNTERS, 0)


# -- the warm job's textfile ------------------------------------------------------------------------------------------


def textfile(site) -> dict:
    return parse(site["textfile"].read_text())


def textfile_after(run, site, outcome: str, exit_code: int) -> dict:
    """Check that run exited with exit_code and that the textfile names outcome alone; return its samples."""
    assert run.returncode == exit_code, run.stderr
    samples = textfile(site)
    assert {each: value(samples, "listens_warm_outcome", outcome=each) for each in OUTCOMES} == {
        each: 1.0 if each == outcome else 0.0 for each in OUTCOMES
    }
    assert value(samples, "listens_warm_exit_code") == exit_code
    return samples


def members(samples: dict) -> dict[str, float]:
    return {result: value(samples, "listens_warm_members", result=result) for result in MEMBER_RESULTS}


def test_textfile_after_a_published_run(site):
    calls_before = site["lastfm"].stats()["requests"]
    started = time.time()
    # UMask=0077 in the unit: node_exporter (another user) must still read the file.
    run = warm(site["env"], umask=0o077)
    ended = time.time()

    samples = textfile_after(run, site, "published", 0)
    assert started <= value(samples, "listens_warm_last_run_timestamp_seconds") <= ended
    assert value(samples, "listens_warm_last_success_timestamp_seconds") == value(
        samples, "listens_warm_last_run_timestamp_seconds"
    )
    assert 0 < value(samples, "listens_warm_duration_seconds") <= ended - started
    assert members(samples) == {"fetched": 5, "carried": 0, "dropped": 0, "failed": 0, "deferred": 0}
    assert value(samples, "listens_warm_lastfm_calls") == site["lastfm"].stats()["requests"] - calls_before == 5
    assert value(samples, "listens_warm_published_generation") == current_generation(site)
    assert value(samples, "listens_warm_consecutive_failures") == 0
    assert site["textfile"].stat().st_mode & 0o777 == 0o644
    assert os.listdir(site["textfile"].parent) == [site["textfile"].name]


def test_textfile_after_a_failed_run_keeps_the_last_success(site):
    assert warm(site["env"]).returncode == 0
    published = textfile(site)
    inode = site["textfile"].stat().st_ino
    site["lastfm"].control("all", {"mode": "http", "status": 503})
    calls_before = site["lastfm"].stats()["requests"]

    run = warm(site["env"])

    samples = textfile_after(run, site, "failed", 1)
    assert value(samples, "listens_warm_last_run_timestamp_seconds") > value(
        published, "listens_warm_last_run_timestamp_seconds"
    )
    for kept in ("listens_warm_last_success_timestamp_seconds", "listens_warm_published_generation"):
        assert value(samples, kept) == value(published, kept)
    assert members(samples) == {"fetched": 0, "carried": 5, "dropped": 0, "failed": 5, "deferred": 0}
    # Each member was asked, then retried: every request the fake counted.
    calls = site["lastfm"].stats()["requests"] - calls_before
    assert value(samples, "listens_warm_lastfm_calls") == calls >= len(MEMBERS)
    assert value(samples, "listens_warm_consecutive_failures") == 1
    # Replaced by a rename (a new inode), never rewritten in place; no temporary file left.
    assert site["textfile"].stat().st_ino != inode
    assert os.listdir(site["textfile"].parent) == [site["textfile"].name]

    assert warm(site["env"]).returncode == 1
    assert value(textfile(site), "listens_warm_consecutive_failures") == 2


def test_textfile_after_a_restored_run(site):
    assert warm(site["env"]).returncode == 0
    published = textfile(site)
    site["cache"].flush()
    site["lastfm"].control("all", {"mode": "http", "status": 503})

    run = warm(site["env"])

    samples = textfile_after(run, site, "restored", 1)
    # The last known tracks are current again, under this run's generation; it still is no success.
    assert value(samples, "listens_warm_published_generation") == current_generation(site)
    assert current_generation(site) > value(published, "listens_warm_published_generation")
    assert value(samples, "listens_warm_last_success_timestamp_seconds") == value(
        published, "listens_warm_last_success_timestamp_seconds"
    )
    assert value(samples, "listens_warm_consecutive_failures") == 1


def test_textfile_after_a_locked_run(site):
    lock = open(site["database"].with_name(site["database"].name + ".lock"), "a+")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        run = warm(site["env"])
    finally:
        lock.close()

    samples = textfile_after(run, site, "locked", 0)
    assert members(samples) == dict.fromkeys(MEMBER_RESULTS, 0)
    assert value(samples, "listens_warm_lastfm_calls") == 0
    assert value(samples, "listens_warm_last_success_timestamp_seconds") == 0
    assert value(samples, "listens_warm_published_generation") == 0


def test_textfile_after_a_config_run(site):
    (site["tmp"] / "a-directory.sqlite3").mkdir()
    env = {**site["env"], "LISTENS_DATABASE": str(site["tmp"] / "a-directory.sqlite3")}

    run = warm(env)

    samples = textfile_after(run, site, "config", 2)
    assert value(samples, "listens_warm_consecutive_failures") == 1


@pytest.mark.parametrize("where", ["missing-directory", "unwritable-directory"])
def test_run_publishes_and_exits_0_when_the_textfile_cannot_be_written(site, where):
    folder = site["textfile"].parent
    prefix: tuple[str, ...] = ()
    if where == "missing-directory":
        folder.rmdir()
    else:
        folder.chmod(0o555)
        if os.geteuid() == 0:
            # root writes anywhere; without these capabilities it meets the permissions like the listens user.
            prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")

    try:
        run = warm(site["env"], prefix=prefix)
    finally:
        if folder.exists():
            folder.chmod(0o755)

    assert run.returncode == 0, run.stderr
    assert summary_of(run.stderr)["outcome"] == "published"
    warnings = [line for line in run.stderr.splitlines() if WARNING in line]
    assert len(warnings) == 1 and warnings[0].startswith("level=WARNING logger=app.warm_metrics ")
    assert str(site["textfile"]) in warnings[0]
    assert not folder.exists() or os.listdir(folder) == []
    assert current_generation(site) > 0


def test_no_textfile_is_written_when_the_variable_is_empty(site):
    env = {**site["env"], "LISTENS_METRICS_FILE": ""}

    run = warm(env)

    assert run.returncode == 0 and WARNING not in run.stderr
    assert os.listdir(site["textfile"].parent) == []


def test_a_garbled_previous_textfile_is_replaced(site):
    site["textfile"].write_text("listens_warm_last_success_timestamp_seconds{ not prometheus\n")

    run = warm(site["env"])

    textfile_after(run, site, "published", 0)

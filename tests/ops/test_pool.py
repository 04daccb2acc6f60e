"""A pool of three memcached processes: consistent hashing, a server stopped or hung, two warm hosts.

The web side reads through app.reader and the write side publishes through
the warm job, both with clients from app.cache, exactly as deployed.

Two libmemcached versions are in use: 1.0.16, bundled in pylibmc's wheels
(Python 3.11), and 1.1.x, which pip builds pylibmc against where there is no
wheel (Debian's libmemcached-dev, e.g. for Python 3.13). What differs is
pinned down by the tests marked "libmemcached 1.0 / 1.1" below:
- remove_failed sets failure_limit to 1 on 1.0 only (app.cache sets it);
- a stopped server is ejected at its second failed call on 1.0, its third on 1.1;
- a hung server's read times out into a plain miss on 1.0, and the server is
  ejected; on 1.1 it raises a time-out naming the server, and the server is
  never ejected (app.cache routes around it).
Every other test holds for both.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time

import pylibmc
import pytest
import requests

from app import create_app
from app.core import cache
from app.core.snapshot import decode_pointer
from app.core.snapshot import lease_key
from app.core.snapshot import pointer_key
from app.core.snapshot import snapshot_key
from app.warm import job
from tests import support
from tests.support import Gunicorn
from tests.support import MemcachedProcess
from tests.support import run_warm
from tests.support import start_warm
from tests.support import timed
from tests.support import wait_until
from tests.support.memcached import cache_get
from tests.support.memcached import memcached_stats
from tests.support.stack import pointer_at
from tests.support.warmlog import summary_of

PREFIX = "user-listens"
MEMBERS = ("alice", "bob", "carol", "dave", "erin")
# The reader's bound: a dead or hung cache must turn into a page this fast.
READ_BOUND_S = 0.5


@pytest.fixture(scope="module")
def pool_processes():
    """Three memcached processes on free loopback ports, UDP off, for the whole module.

    memcached takes a second to exit, so they are started once, not per test.
    """
    servers = [MemcachedProcess() for _ in range(3)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def pool(pool_processes):
    """The module's three servers, each running, answering and empty, whatever the last test did to them."""
    for server in pool_processes:
        if server.process.poll() is None:
            server.resume()
        else:
            server.start()
        server.flush()
    return pool_processes


def servers_of(pool) -> tuple[str, ...]:
    return tuple(server.address for server in pool)


def holder(servers, key: str) -> MemcachedProcess:
    """Return the one server that holds key, asking each server directly."""
    found = [server for server in servers if cache_get(server.address, key) is not None]
    assert len(found) == 1, f"{key} is on {[server.address for server in found]}"
    return found[0]


def add_members(database) -> None:
    support.add_members(database, MEMBERS)


def keys_by_holder(pool, client, count: int = 40) -> dict[str, MemcachedProcess]:
    """Store count keys through client and return where each one landed."""
    for index in range(count):
        assert client.set(f"key:{index}", b"value")
    return {f"key:{index}": holder(pool, f"key:{index}") for index in range(count)}


def fail(server: MemcachedProcess, how: str) -> None:
    if how == "stopped":
        server.stop()
    else:
        server.pause()


def recover(server: MemcachedProcess, how: str) -> None:
    if how == "stopped":
        server.start()  # the same port, every key lost
    else:
        server.resume()


def test_connect_builds_consistent_hashing_client_that_ejects_failed_servers_when_pool():
    behaviors = cache.connect(("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")).behaviors
    single = cache.connect(("127.0.0.1:1",)).behaviors

    assert behaviors["distribution"] == "consistent ketama" and behaviors["ketama"] == 1
    assert (behaviors["auto_eject"], behaviors["failure_limit"]) == (1, 1)
    # dead_timeout=0 would keep an ejected server "marked dead" for good.
    assert behaviors["dead_timeout"] >= 1
    assert single["auto_eject"] == 0 and single["distribution"] == "consistent ketama"


def test_pool_spreads_keys_over_every_server(pool):
    client = cache.connect(servers_of(pool))

    for index in range(60):
        assert client.set(f"spread:{index}", b"x")

    counts = [memcached_stats(server.address)["curr_items"] for server in pool]
    assert sum(counts) == 60 and min(counts) > 0, counts


LIBMEMCACHED_1_0 = pylibmc.libmemcached_version.startswith("1.0.")


def raw_client(pool) -> tuple[pylibmc.Client, MemcachedProcess]:
    """Return a plain pylibmc client with app.cache's pool behaviours (no RawClient failover), and key:0's server."""
    client = pylibmc.Client(list(servers_of(pool)), behaviors=cache.connect(servers_of(pool)).behaviors)
    return client, keys_by_holder(pool, client)["key:0"]


def raw_outcome(call) -> str:
    try:
        value = call()
    except pylibmc.Error as error:
        return "timeout" if "TIMEOUT" in str(error) else type(error).__name__
    return "miss" if value is None else "value"


def test_libmemcached_remove_failed_alone_sets_failure_limit_1_on_1_0_only():
    client = pylibmc.Client(["127.0.0.1:1", "127.0.0.1:2"], behaviors={"remove_failed": 1})

    # libmemcached 1.0: 1; 1.1: the default, 5, so app.cache sets failure_limit itself.
    assert client.behaviors["failure_limit"] == (1 if LIBMEMCACHED_1_0 else 5)


def test_libmemcached_ejects_a_stopped_server_after_two_failed_calls_on_1_0_three_on_1_1(pool):
    client, victim = raw_client(pool)
    victim.stop()
    outcomes = []
    while len(outcomes) < 6 and (not outcomes or outcomes[-1] != "True"):
        try:
            outcomes.append(str(client.set("key:0", b"moved")))
        except pylibmc.Error as error:
            outcomes.append(type(error).__name__)

    expected = ["ConnectionError", "ServerDead", "True"]
    if not LIBMEMCACHED_1_0:
        expected = ["ConnectionError", "ConnectionError", "ServerDead", "True"]
    assert outcomes == expected


def test_libmemcached_hung_server_read_is_a_miss_then_ejected_on_1_0_a_timeout_for_good_on_1_1(pool):
    client, victim = raw_client(pool)
    victim.pause()
    try:
        outcomes = [raw_outcome(lambda: client.get("key:0")) for _attempt in range(4)]
    finally:
        victim.resume()

    if LIBMEMCACHED_1_0:
        # The time-out reads as a miss (RawClient asks again), then the server is out of the ring.
        assert outcomes == ["miss", "ServerDead", "miss", "miss"]
    else:
        # Never ejected: every call costs a time-out (RawClient then goes around the server).
        assert outcomes == ["timeout"] * 4


@pytest.mark.parametrize("how", ["stopped", "hung"])
def test_client_writes_a_failed_servers_keys_to_a_live_server(pool, how):
    client = cache.connect(servers_of(pool), timeout_ms=cache.WRITER_TIMEOUT_MS)
    where = keys_by_holder(pool, client)
    victim = where["key:0"]
    moved = [key for key, server in where.items() if server is victim]
    live = [server for server in pool if server is not victim]

    fail(victim, how)

    for key in moved:
        assert client.set(key, b"moved")
        assert client.get(key) == b"moved"
        assert holder(live, key) in live


def test_new_client_reads_a_hung_servers_keys_from_where_they_were_moved(pool):
    writer = cache.connect(servers_of(pool))
    where = keys_by_holder(pool, writer)
    victim = where["key:0"]
    moved = [key for key, server in where.items() if server is victim]
    assert len(moved) >= 3, where
    victim.pause()
    for key in moved:
        assert writer.set(key, b"moved")

    # A new process (the next warm run, a new worker) connects to the hung
    # server afresh: libmemcached returns that read's time-out as a miss.
    reader = cache.connect(servers_of(pool))
    value, elapsed = timed(lambda: reader.get(moved[0]))

    assert value == b"moved" and elapsed < READ_BOUND_S
    assert reader.gets(moved[1])[0] == b"moved"
    assert cache.confirmed_get(cache.connect(servers_of(pool)), moved[2]) == b"moved"


@pytest.mark.parametrize("how", ["stopped", "hung"])
def test_confirmed_get_trusts_a_miss_only_while_the_pool_is_whole(pool, how):
    client = cache.connect(servers_of(pool))
    where = keys_by_holder(pool, client)
    victim = where["key:0"]
    absent = next(key for key, server in where.items() if server is victim)
    present = next(key for key, server in where.items() if server is not victim)
    assert client.delete(absent)
    assert cache.confirmed_get(client, absent) is None

    fail(victim, how)
    try:
        for _attempt in range(3):
            started = time.monotonic()
            with pytest.raises(cache.CacheUnavailableError):
                cache.confirmed_get(client, absent)
            assert time.monotonic() - started < READ_BOUND_S
        value, elapsed = timed(lambda: cache.confirmed_get(client, present))
        assert value == b"value" and elapsed < READ_BOUND_S
    finally:
        recover(victim, how)

    # Once the server is back in the client's ring, a miss is a miss again.
    wait_until(lambda: cache.confirmed_get(client, absent) is None, 10, "the server back in the ring")


def test_page_is_stale_never_warming_then_next_warm_run_recovers_when_pool_server_hangs(pool, lastfm, settings):
    settings = dataclasses.replace(settings, memcached_servers=servers_of(pool), lastfm_url=lastfm.url)
    add_members(settings.database)
    first = job.run(settings)
    assert (first.outcome, first.exit_code) == ("published", 0), first.summary()
    web = create_app(settings).test_client()
    assert web.get("/api/internal/user-listens").get_json()["state"] == "fresh"
    victim = holder(pool, pointer_key(PREFIX))

    victim.pause()
    try:
        for _attempt in range(3):
            response, elapsed = timed(lambda: web.get("/api/internal/user-listens"))
            # Stale-if-error: the list this worker showed, never `warming`.
            data = response.get_json()
            assert response.status_code == 200 and (data["state"], data["reachable"]) == ("stale", False)
            assert data["generation"] == first.generation
            assert elapsed < READ_BOUND_S
        second = job.run(settings)
        assert (second.outcome, second.exit_code) == ("published", 0), second.summary()
        for _attempt in range(3):
            response, elapsed = timed(lambda: web.get("/api/internal/user-listens"))
            assert (response.get_json()["state"], response.get_json()["generation"]) == ("fresh", second.generation)
            assert elapsed < READ_BOUND_S
    finally:
        victim.resume()

    # The server comes back holding the pointer it had; the next run moves it on.
    third = job.run(settings)
    assert (third.outcome, third.exit_code) == ("published", 0), third.summary()
    assert pointer_at(victim.address).generation == third.generation
    wait_until(
        lambda: web.get("/api/internal/user-listens").get_json()["generation"] == third.generation,
        10,
        "the page on the newest generation",
    )


def api(web: Gunicorn) -> tuple[dict, float]:
    started = time.monotonic()
    response = requests.get(f"{web.url}/api/internal/user-listens", timeout=5)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    return response.json(), elapsed


def published_generation(run: subprocess.CompletedProcess) -> int:
    assert run.returncode == 0, run.stderr
    summary = summary_of(run.stderr)
    assert summary["outcome"] == "published", run.stderr
    return int(summary["generation"])


@pytest.mark.parametrize("lost", ["pointer", "snapshot"])
def test_page_and_next_warm_run_recover_without_manual_steps_when_pool_server_stops(pool, lastfm, tmp_path, lost):
    env = support.stack_env(",".join(servers_of(pool)), lastfm.url, tmp_path / "listens.sqlite3")
    add_members(tmp_path / "listens.sqlite3")
    first = published_generation(run_warm(env))
    web = Gunicorn(env).start(tmp_path / "gunicorn.log")
    try:
        assert api(web)[0]["generation"] == first
        victim = holder(pool, pointer_key(PREFIX) if lost == "pointer" else snapshot_key(PREFIX, first))

        # The pointer's loss is `unavailable` (never `warming`) until the next
        # run, or `stale` in a worker that showed a list (stale-if-error); a
        # worker that already parsed the lost snapshot keeps showing it.
        expected = ("stale", "unavailable") if lost == "pointer" else ("fresh", "stale", "unavailable")
        victim.stop()
        for _attempt in range(6):
            data, elapsed = api(web)
            assert data["state"] in expected and elapsed < READ_BOUND_S
        second = published_generation(run_warm(env))
        wait_until(lambda: api(web)[0]["generation"] == second, 10, "the page on the run published without the server")
        assert api(web)[0]["state"] == "fresh"

        victim.start()  # back on its port, empty
        third = published_generation(run_warm(env))
        wait_until(lambda: api(web)[0]["generation"] == third, 10, "the page once the server is back")
        assert requests.get(f"{web.url}/healthz", timeout=5).status_code == 200
    finally:
        web.stop()
    assert "Traceback" not in (tmp_path / "gunicorn.log").read_text()


def outcome(stderr: str) -> tuple[str, int]:
    summary = summary_of(stderr)
    return summary["outcome"], int(summary["generation"])


def test_warm_runs_on_two_hosts_publish_once_per_cycle_through_the_lease(pool, lastfm, tmp_path):
    hosts = {}
    for name in ("a", "b"):
        # Resolved: the lease names its owner by the lock file's real path.
        folder = (tmp_path / name).resolve()
        folder.mkdir()
        add_members(folder / "listens.sqlite3")
        hosts[name] = support.stack_env(
            ",".join(servers_of(pool)),
            lastfm.url,
            folder / "listens.sqlite3",
            LISTENS_LOCK_FILE=str(folder / "warm.lock"),
        )
    # Each Last.fm answer takes a second, so a run holds the lease that long.
    lastfm.control("latency", {"ms": 1000})
    reader = cache.connect(servers_of(pool))
    pointer_moves = []

    for first, second in (("a", "b"), ("b", "a")):
        running = start_warm(hosts[first])
        try:
            # The first host is mid-run, holding the lease; freeze it there.
            wait_until(
                lambda: (reader.get(lease_key(PREFIX)) or b"").endswith(hosts[first]["LISTENS_LOCK_FILE"].encode()),  # noqa: B023 (waited on within this iteration)
                20,
                f"host {first} holding the lease",
            )
            os.kill(running.pid, signal.SIGSTOP)
            try:
                other = run_warm(hosts[second], timeout_s=60)
            finally:
                os.kill(running.pid, signal.SIGCONT)
            stdout, stderr = running.communicate(timeout=60)
        finally:
            if running.poll() is None:
                running.kill()
                running.wait()

        assert other.returncode == 0 and outcome(other.stderr)[0] == "leased", other.stderr
        assert running.returncode == 0, stderr
        published, generation = outcome(stderr)
        assert published == "published"
        pointer_moves.append(decode_pointer(reader.get(pointer_key(PREFIX))).generation)
        assert pointer_moves[-1] == generation
        assert reader.get(lease_key(PREFIX)) is None

    assert len(set(pointer_moves)) == 2 and pointer_moves == sorted(pointer_moves)

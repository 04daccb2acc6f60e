"""Two warm hosts sharing one PostgreSQL members database, and that database going away mid-run.

Real processes: the warm script (twice, each with its own lock file, as two
hosts would), one memcached, the fake Last.fm and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC
from datetime import datetime

from app.core import cache
from app.core.settings import DEFAULT_KEY_PREFIX
from app.warm import members
from app.warm import publisher
from tests.postgres import PASSWORD
from tests.postgres import PostgresServer
from tests.support import FakeLastfm
from tests.support import run_warm
from tests.support import stack_env
from tests.support import start_warm
from tests.support import wait_until

CYCLES = 20


def published(address: str) -> publisher.Snapshot | None:
    return publisher.read_published(cache.connect((address,)), DEFAULT_KEY_PREFIX)


def test_two_warm_hosts_alternating_and_racing_publish_exactly_the_public_members(
    postgres_url, memcached, lastfm, tmp_path
):
    hosts = [
        stack_env(memcached.address, lastfm.url, postgres_url, LISTENS_LOCK_FILE=str(tmp_path / f"{host}.lock"))
        for host in ("a", "b")
    ]
    connection = members.connect(postgres_url)
    now = datetime.now(UTC)
    names = (f"member{index:02d}" for index in range(100))
    for _ in range(4):
        name = next(names)
        members.add_member(connection, name, name, public=True, now=now)
    generations = []
    try:
        for cycle in range(CYCLES):
            # Between cycles the site changes: somebody joins, goes private, leaves.
            name = next(names)
            members.add_member(connection, name, name, public=cycle % 5 != 4, now=now)
            public = [member.username for member in members.list_members(connection, public_only=True)]
            if cycle % 3 == 1:
                members.set_visibility(connection, public[0], False)
            if cycle % 4 == 2:
                members.remove_member(connection, public[-1])
            if cycle % 6 == 5:
                hidden = [m.username for m in members.list_members(connection) if not m.public]
                members.set_visibility(connection, hidden[0], True)
            expected = {member.username for member in members.list_members(connection, public_only=True)}

            # Even cycles: one host, alternately a and b; odd cycles: both at once.
            runners = [hosts[(cycle // 2) % 2]] if cycle % 2 == 0 else hosts[cycle % 4 // 2 :] + hosts[: cycle % 4 // 2]
            processes = [start_warm(env) for env in runners]
            outputs = [process.communicate(timeout=120) for process in processes]
            for process, (_, stderr) in zip(processes, outputs, strict=True):
                assert process.returncode == 0, stderr
                assert PASSWORD not in stderr
            snapshot = published(memcached.address)
            assert snapshot is not None
            assert {track.username for track in snapshot.tracks} == expected, f"cycle {cycle}"
            generations.append(snapshot.generation)
            # No lost last known track: every public member has one in the shared database.
            stored = members.list_members(connection, public_only=True)
            assert all(member.last_track is not None for member in stored), f"cycle {cycle}"
            assert not any(m.last_track for m in members.list_members(connection) if not m.public)
    finally:
        connection.close()
    assert generations == sorted(generations)


def test_postgresql_stopped_during_a_run_exits_1_publishes_nothing_and_keeps_the_last_snapshot(memcached, tmp_path):
    server = PostgresServer()
    lastfm = FakeLastfm().start("--latency-ms", "1500")
    try:
        url = server.create_database("stopped")
        connection = members.connect(url)
        for name in ("alice", "bob", "carol"):
            members.add_member(connection, name, name, public=True, now=datetime.now(UTC))
        connection.close()
        env = stack_env(memcached.address, lastfm.url, url, LISTENS_LOCK_FILE=str(tmp_path / "warm.lock"))
        first = run_warm(env)
        assert first.returncode == 0, first.stderr
        before = published(memcached.address)
        assert before is not None and len(before.tracks) == 3
        asked = lastfm.stats()["requests"]

        process = start_warm(env)
        # The run is fetching (each answer takes 1.5 s) when the database stops.
        wait_until(lambda: lastfm.stats()["requests"] > asked, 30, "the second run fetching")
        server.stop_server()
        stdout, stderr = process.communicate(timeout=120)

        assert process.returncode == 1, stderr
        assert "cannot be reached" in stderr
        assert PASSWORD not in stdout + stderr
        after = published(memcached.address)
        assert after is not None and after.generation == before.generation
    finally:
        lastfm.stop()
        server.stop()

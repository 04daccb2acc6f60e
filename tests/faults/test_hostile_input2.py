"""Hostile input, round two: a dripping Last.fm, a refused key, a busy or full database, a relinked
account, a poisoned render, through the real warm script, gunicorn, memcached and the fake Last.fm.
"""

from __future__ import annotations

import contextlib
import json
import re
import resource
import socket
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
import requests

from app.warm import members
from tests.support import REPO
from tests.support import FakeLastfm
from tests.support import MemcachedProcess
from tests.support import run_service
from tests.support import service_env
from tests.support import stack_env
from tests.support import timed
from tests.support.memcached import memcached_stats
from tests.support.stack import snapshot_at
from tests.support.warmlog import summary_of

# The run's process must exit within its deadline plus this much, whatever Last.fm does
# (systemd's TimeoutStartSec is far above; deploy/systemd/listens-warm.service).
EXIT_BOUND_S = 5.0


WARM_SCRIPT = [sys.executable, "scripts/warm_listens.py"]
LISTENS_WARM = [sys.executable, "-m", "flask", "--app", "app", "listens", "warm"]


@pytest.mark.parametrize("mode", ["drip", "drip_headers"])
@pytest.mark.parametrize("command", [WARM_SCRIPT, LISTENS_WARM], ids=["warm-script", "listens-warm"])
def test_run_against_dripping_lastfm_exits_within_deadline_plus_5_s(mode, command, make_stack):
    deadline_s = 8
    stack = make_stack(web=False, env={"LISTENS_DEADLINE_SECONDS": str(deadline_s)}, members=("steady", "dripper"))
    stack.lastfm.set_user("dripper", mode=mode, delay_s=1)

    run, elapsed = timed(lambda: run_service(command, stack.env))

    summary = summary_of(run.stderr)
    assert summary["outcome"] == "published" and run.returncode == 0, run.stderr
    assert summary["fetched"] == "1" and summary["failed"] == "1", run.stderr
    assert elapsed <= deadline_s + EXIT_BOUND_S, f"the process took {elapsed:.1f} s\n{run.stderr}"
    assert float(summary["duration_s"]) <= deadline_s + 1.5
    assert stack.pointer().generation == int(summary["generation"])


def test_refused_key_ends_run_within_5_s_while_another_member_hangs(make_stack):
    stack = make_stack(
        web=False, env={"LISTENS_DEADLINE_SECONDS": "60"}, members=("steady", "hangs", "refused", "later1", "later2")
    )
    published = int(stack.warm_ok()["generation"])
    stack.lastfm.set_user("hangs", mode="hang", delay_s=120)
    stack.lastfm.set_user("refused", mode="error", code=26)  # "Suspended API key", status 403

    run, elapsed = timed(lambda: run_service(WARM_SCRIPT, stack.env))

    summary = summary_of(run.stderr)
    assert run.returncode == 2 and summary["outcome"] == "config", run.stderr
    assert "LASTFM_API_KEY" in run.stderr
    assert elapsed <= 5.0, f"the process took {elapsed:.1f} s\n{run.stderr}"
    assert stack.pointer().generation == published


# -- a busy or full members database ---------------------------------------------------------------------------


def hold_write_lock(database: Path) -> sqlite3.Connection:
    """Hold the database's write lock, as an operator's sqlite3 shell with a transaction open does."""
    connection = sqlite3.connect(database, isolation_level=None, timeout=5)
    connection.execute("BEGIN IMMEDIATE")
    return connection


def stored_runs(database: Path) -> list[str]:
    connection = sqlite3.connect(database)
    try:
        return [row[0] for row in connection.execute("SELECT summary FROM runs ORDER BY generation")]
    finally:
        connection.close()


def stored_tracks(database: Path) -> dict[str, str]:
    """Return member name -> the Last.fm account of the track the database holds for them."""
    with closing(members.connect(database)) as connection:
        return {
            member.username: member.last_track.lastfm_username
            for member in members.list_members(connection)
            if member.last_track is not None
        }


def published_tracks(stack) -> list[dict]:
    pointer = stack.pointer()
    return json.loads(snapshot_at(stack.cache.address, pointer.generation))["tracks"]


def test_database_locked_past_busy_timeout_still_publishes_and_next_run_records_everything(make_stack, tmp_path):
    stack = make_stack(web=False, env={"LISTENS_DB_BUSY_SECONDS": "1"}, members=("alice", "bob", "carol"))
    database = Path(stack.env["LISTENS_DATABASE"])
    lock = hold_write_lock(database)
    try:
        run = stack.warm()
    finally:
        lock.rollback()
        lock.close()

    summary = summary_of(run.stderr)
    assert run.returncode == 1, run.stderr
    assert (summary["outcome"], summary["db"], summary["fetched"]) == ("published", "busy", "3"), run.stderr
    assert "Traceback" not in run.stderr and "stayed locked" in run.stderr
    assert stack.pointer().generation == int(summary["generation"])
    assert {track["username"] for track in published_tracks(stack)} == {"alice", "bob", "carol"}
    assert stored_tracks(database) == {} and stored_runs(database) == []

    second = stack.warm()

    assert second.returncode == 0 and summary_of(second.stderr)["outcome"] == "published", second.stderr
    assert stored_tracks(database) == {"alice": "alice", "bob": "bob", "carol": "carol"}
    # The stored summary is the printed one, real duration included.
    printed = second.stderr.split(" warm ", 1)[1].splitlines()[0]
    assert stored_runs(database) == [f"warm {printed}"]
    assert float(summary_of(second.stderr)["duration_s"]) > 0


def test_database_locked_after_pointer_swap_reports_published_never_failed(make_stack):
    stack = make_stack(web=False, env={"LISTENS_DB_BUSY_SECONDS": "1"}, members=("alice", "bob"))
    database = Path(stack.env["LISTENS_DATABASE"])
    run = stack.paused("swap-then-lock", pause_at=("pointer-swapped",))
    generation = run.wait_reached("pointer-swapped")
    lock = hold_write_lock(database)
    try:
        run.release("pointer-swapped")
        run.finish()
    finally:
        lock.rollback()
        lock.close()

    assert run.returncode == 1, run.stderr
    assert (run.summary["outcome"], run.summary["db"]) == ("published", "busy"), run.stderr
    assert "Traceback" not in run.stderr
    assert stack.pointer().generation == generation
    # The fetched tracks were stored before the swap; only the summary is missing.
    assert stored_tracks(database) == {"alice": "alice", "bob": "bob"}


def limit_file_size(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize(
    "limit, exit_code, outcome",
    [
        # Room for SQLite's 32 KB -shm file and 8 WAL frames: the run's write of 200 tracks does not fit.
        (32 * 1024 + 4 * 1024, 1, "published"),
        # Not even the -shm file fits: the database cannot be opened.
        (1000, 1, "failed"),
    ],
    ids=["full-while-storing", "full-at-open"],
)
def test_full_disk_says_disk_full_not_permissions(limit, exit_code, outcome, make_stack):
    stack = make_stack(web=False)
    names = [f"member{index:03d}" for index in range(200)]
    stack.add_members(*names)
    stack.warm_ok()
    database = Path(stack.env["LISTENS_DATABASE"])

    run = subprocess.run(
        WARM_SCRIPT,
        cwd=REPO,
        env=service_env(stack.env),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_file_size(limit),
    )

    summary = summary_of(run.stderr)
    assert run.returncode == exit_code, run.stderr
    assert (summary["outcome"], summary["db"]) == (outcome, "full"), run.stderr
    assert "disk is full" in run.stderr and "permissions" not in run.stderr
    assert "Traceback" not in run.stderr
    if outcome == "published":
        assert stack.pointer().generation == int(summary["generation"])
    assert len(stored_tracks(database)) == 200


# -- a member changed while a run is under way -----------------------------------------------------------------

STEPS = ("fetched", "snapshot-written", "read-back", "pointer-read", "pointer-swapped")


def relink(connection) -> None:
    members.set_lastfm_username(connection, "alice", "alice2")


def remove(connection) -> None:
    members.remove_member(connection, "alice")


def hide(connection) -> None:
    members.set_visibility(connection, "alice", False)


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("change", [relink, remove, hide], ids=["relink", "remove", "private"])
def test_member_changed_during_run_wins_over_its_results(change, step, make_stack):
    stack = make_stack(web=False, members=("alice", "bob", "carol"))
    database = Path(stack.env["LISTENS_DATABASE"])
    stack.warm_ok()
    # The old account answers with a new track, so only this run's fetch could bring it back.
    stack.lastfm.set_user("alice", mode="now_playing")
    run = stack.paused(change.__name__, pause_at=(step,))
    run.wait_reached(step)
    with closing(members.connect(database)) as connection:
        change(connection)
    run.release(step)
    run.finish()

    assert run.returncode == 0, run.stderr
    assert [track for track in published_tracks(stack) if track["lastfmUsername"] == "alice"] == []
    assert "alice" not in stored_tracks(database) or stored_tracks(database)["alice"] == "alice2"

    # The next run, the new account failing transiently, has nothing of the old one to carry.
    stack.lastfm.set_user("alice2", mode="http", status=503)
    second = stack.warm()
    assert second.returncode == 0, second.stderr
    assert [track for track in published_tracks(stack) if track["username"] == "alice"] == []
    assert "alice" not in stored_tracks(database)


# -- what one request asks for never changes what others get ---------------------------------------------------


@pytest.mark.parametrize("header", ["SCRIPT_NAME", "PATH_INFO"])
def test_poisoned_wsgi_header_from_loopback_never_changes_the_page_others_get(header, make_stack):
    stack = make_stack(workers=1, members=("alice",))
    stack.warm_ok()

    poisoned = requests.get(stack.web.url + "/x/", headers={header: "/x"}, timeout=10)
    normal = stack.get("/")

    assert "/x/static/" not in poisoned.text
    assert normal.status_code == 200
    links = re.findall(r'(?:href|src)="(/[^"]*)"', normal.text)
    assert links and all(not link.startswith("/x/") for link in links), links
    assert any(link.startswith("/static/") for link in links), links


# -- configuration errors are configuration errors ------------------------------------------------------------


def test_ipv6_memcached_address_exits_2_at_start_naming_the_variable(tmp_path):
    with contextlib.ExitStack() as started:
        cache = MemcachedProcess(extra_args=("-l", "::1"))
        try:
            cache.start()
        except RuntimeError as error:
            pytest.skip(f"this machine cannot listen on ::1: {error}")
        started.callback(cache.stop)
        lastfm = FakeLastfm().start(log_path=tmp_path / "fake-lastfm.log")
        started.callback(lastfm.stop)
        # memcached answers on ::1: the address is reachable, the client is what cannot use it.
        with socket.create_connection(("::1", cache.port), timeout=2) as connection:
            connection.sendall(b"version\r\n")
            assert connection.recv(100).startswith(b"VERSION")
        connections = memcached_stats(cache.address)["total_connections"]
        env = stack_env(f"[::1]:{cache.port}", lastfm.url, tmp_path / "listens.sqlite3")

        run, _ = timed(lambda: run_service(WARM_SCRIPT, env))

        errors = [line for line in run.stderr.splitlines() if line.startswith("level=ERROR")]
        assert run.returncode == 2, run.stderr
        assert len(errors) == 1 and "LISTENS_MEMCACHED" in errors[0] and "IPv6" in errors[0], run.stderr
        assert "Traceback" not in run.stderr
        # Before any network call: no Last.fm request, no memcached connection beyond the stats reads.
        assert lastfm.stats()["requests"] == 0
        assert memcached_stats(cache.address)["total_connections"] == connections + 1

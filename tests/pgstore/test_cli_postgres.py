"""The `users` and `db copy` commands on PostgreSQL, and what a bad URL or a refused password prints."""

from __future__ import annotations

import subprocess
import sys
from contextlib import closing
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from app.warm import members
from app.warm.members import FetchOutcome
from tests.postgres import PASSWORD
from tests.support import REPO
from tests.support import run_warm
from tests.support import service_env
from tests.support.tracks import make_track

NOW = datetime(2026, 1, 2, 3, 5, 0, tzinfo=UTC)
FLASK = [sys.executable, "-m", "flask", "--app", "app"]


def cli(database, *args: str, **extra: str) -> subprocess.CompletedProcess:
    env = service_env({"LISTENS_DATABASE": str(database), **extra})
    return subprocess.run([*FLASK, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def warm_on(database: str, tmp_path, **extra: str) -> subprocess.CompletedProcess:
    """Run scripts/warm_listens.py once on database, with memcached and Last.fm unreachable."""
    return run_warm(
        {
            "LISTENS_DATABASE": database,
            "LISTENS_MEMCACHED": "127.0.0.1:1",
            "LISTENS_LASTFM_URL": "http://127.0.0.1:1/2.0/",
            "LASTFM_API_KEY": "k",
            "LISTENS_LOCK_FILE": str(tmp_path / "warm.lock"),
            **extra,
        },
        timeout_s=60,
    )


def test_every_users_command_works_on_postgresql(postgres_url):
    assert cli(postgres_url, "users", "add", "alice", "--lastfm", "rj").returncode == 0
    assert cli(postgres_url, "users", "add", "bob", "--lastfm", "bobfm", "--private").returncode == 0
    duplicate = cli(postgres_url, "users", "add", "ALICE", "--lastfm", "other")
    assert duplicate.returncode == 1
    assert duplicate.stderr.count("\n") == 1 and "already exists" in duplicate.stderr
    assert cli(postgres_url, "users", "set-visibility", "bob", "public").returncode == 0
    assert cli(postgres_url, "users", "set-lastfm", "alice", "rj2").returncode == 0
    assert cli(postgres_url, "users", "remove", "bob").returncode == 0
    listing = cli(postgres_url, "users", "list")
    assert listing.returncode == 0, listing.stderr
    assert "alice" in listing.stdout and "rj2" in listing.stdout and "bob" not in listing.stdout
    with closing(members.connect(postgres_url)) as connection:
        assert [(m.username, m.lastfm_username, m.public) for m in members.list_members(connection)] == [
            ("alice", "rj2", True)
        ]


def test_status_reads_a_new_postgresql_database_without_creating_a_table(postgres_url):
    status = cli(postgres_url, "listens", "status", LISTENS_MEMCACHED="127.0.0.1:1")

    assert status.returncode == 1  # memcached unreachable: unavailable
    assert "last run:     none recorded\n" in status.stdout
    with psycopg.connect(postgres_url) as raw:
        assert raw.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0


def _assert_no_password(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text
        assert "wrong-Secret-77" not in text


@pytest.mark.parametrize(
    "make_url",
    [
        pytest.param(lambda server: server.url("postgres", password="wrong-Secret-77"), id="refused-password"),
        pytest.param(
            lambda server: f"postgresql://postgres@127.0.0.1:{server.port}/postgres?password=wrong-Secret-77",
            id="refused-password-in-query",
        ),
        pytest.param(lambda server: server.url("no_such_db"), id="unknown-database"),
        pytest.param(lambda server: f"postgresql://postgres:{PASSWORD}@127.0.0.1:notaport/x", id="bad-port"),
        pytest.param(lambda server: f"postgresql://postgres:{PASSWORD}@127.0.0.1/a b", id="bad-url"),
    ],
)
def test_a_bad_url_or_refused_password_exits_2_with_one_line_and_no_password(postgres_server, make_url, tmp_path):
    url = make_url(postgres_server)
    listed = cli(url, "users", "list")
    assert listed.returncode == 2, listed.stderr
    assert listed.stderr.startswith("Error: ") and listed.stderr.count("\n") == 1, listed.stderr
    metrics = tmp_path / "listens.prom"
    warm = warm_on(url, tmp_path, LISTENS_METRICS_FILE=str(metrics))
    assert warm.returncode == 2, warm.stderr
    assert "level=ERROR" in warm.stderr, warm.stderr
    written = metrics.read_text() if metrics.exists() else ""
    _assert_no_password(listed.stdout, listed.stderr, warm.stdout, warm.stderr, written)


def _fill(connection) -> None:
    alice = members.add_member(connection, "alice", "rj", public=True, now=NOW)
    members.add_member(connection, "Bob", "bobfm", public=False, now=NOW)
    carol = members.add_member(connection, "carol", "carolfm", public=True, now=NOW)
    track = make_track(lastfm_username="rj", fetched_at=NOW)
    members.record_outcomes(
        connection,
        [
            FetchOutcome(alice.id, "ok", track, NOW + timedelta(minutes=1)),
            FetchOutcome(carol.id, "not_found", None, NOW + timedelta(hours=1)),
        ],
    )
    members.record_run(connection, 1767323100, NOW, 0, "published 1 track")


def filled_sqlite(tmp_path) -> Path:
    """Return a new SQLite members file with three members, one last known track and one run."""
    source = tmp_path / "source.sqlite3"
    with closing(members.connect(source)) as connection:
        _fill(connection)
    return source


def _contents(database) -> tuple:
    with closing(members.connect(database)) as connection:
        listed = members.list_members(connection)
        run = members.last_run(connection)
        if run is None:
            return listed, None
        return listed, (run["generation"], run["finished_at"], run["exit_code"], run["summary"])


def test_db_copy_moves_sqlite_into_postgresql_and_back_with_nothing_lost(postgres_url, tmp_path):
    source = filled_sqlite(tmp_path)
    expected = _contents(source)
    assert expected[0][0].last_track is not None and expected[0][0].next_poll_at is not None

    forward = cli(source, "db", "copy", "--from", str(source), "--to", postgres_url)
    assert forward.returncode == 0, forward.stderr
    assert "copied 3 members, 1 last known tracks and 1 runs" in forward.stdout
    _assert_no_password(forward.stdout, forward.stderr)
    assert _contents(postgres_url) == expected

    back = tmp_path / "back.sqlite3"
    backward = cli(source, "db", "copy", "--from", postgres_url, "--to", str(back))
    assert backward.returncode == 0, backward.stderr
    assert _contents(back) == expected
    # A member added after the copy gets a new id on either engine.
    for database in (postgres_url, back):
        with closing(members.connect(database)) as connection:
            added = members.add_member(connection, "dave", "davefm", public=True, now=NOW)
            assert added.id == max(member.id for member in expected[0]) + 1


def test_db_copy_into_a_database_with_members_exits_2_and_changes_nothing(postgres_url, tmp_path):
    source = filled_sqlite(tmp_path)
    connection = members.connect(postgres_url)
    members.add_member(connection, "zoe", "zoefm", public=True, now=NOW)
    connection.close()
    copied = cli(source, "db", "copy", "--from", str(source), "--to", postgres_url)
    assert copied.returncode == 2
    assert copied.stderr.count("\n") == 1 and "empty" in copied.stderr
    _assert_no_password(copied.stdout, copied.stderr)
    assert [member.username for member in _contents(postgres_url)[0]] == ["zoe"]


def test_db_copy_from_a_missing_file_exits_2(tmp_path, postgres_url):
    copied = cli(tmp_path / "x.sqlite3", "db", "copy", "--from", str(tmp_path / "none.sqlite3"), "--to", postgres_url)
    assert copied.returncode == 2
    assert copied.stderr.count("\n") == 1
    assert not (tmp_path / "none.sqlite3").exists()


def test_warm_run_refuses_a_newer_schema_with_exit_2_and_writes_nothing(postgres_url, tmp_path):
    members.connect(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as raw:
        raw.execute("UPDATE schema_version SET version = version + 1")
    warm = warm_on(postgres_url, tmp_path)
    assert warm.returncode == 2, warm.stderr
    errors = [line for line in warm.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "newer than this release" in errors[0]
    _assert_no_password(warm.stdout, warm.stderr)
    with psycopg.connect(postgres_url) as raw:
        assert raw.execute("SELECT count(*) FROM runs").fetchone()[0] == 0

"""The members store: members, their Last.fm names and last known tracks, in SQLite.

It is used by the warm job and the CLI on the warm host only; the web process
never opens the database. Every function takes an open sqlite3 connection and
either commits a whole change or raises without changing anything.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
import resource
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from pathlib import Path

import psycopg

from app.core.settings import is_url
from app.core.snapshot import Track
from app.core.snapshot import format_time
from app.core.snapshot import parse_time

# Named as in every log line (logger=app.members), whatever the module's place in the package.
logger = logging.getLogger("app.members")

# A Last.fm username is 1-15 letters, digits, "_" or "-". New accounts start
# with a letter and have at least 2 characters; older ones may not.
LASTFM_USERNAME = re.compile(r"^[A-Za-z0-9_-]{1,15}$")
SITE_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,29}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS members (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    lastfm_username TEXT NOT NULL UNIQUE COLLATE NOCASE,
    public INTEGER NOT NULL DEFAULT 1 CHECK (public IN (0, 1)),
    lastfm_status TEXT NOT NULL DEFAULT 'unknown',
    created_at TEXT NOT NULL,
    next_poll_at TEXT
);
CREATE TABLE IF NOT EXISTS last_tracks (
    member_id INTEGER PRIMARY KEY REFERENCES members (id) ON DELETE CASCADE,
    artist TEXT NOT NULL,
    album TEXT NOT NULL,
    track TEXT NOT NULL,
    url TEXT NOT NULL,
    image TEXT NOT NULL,
    played_at TEXT,
    now_playing INTEGER NOT NULL,
    fetched_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    generation INTEGER PRIMARY KEY,
    finished_at TEXT NOT NULL,
    exit_code INTEGER NOT NULL,
    summary TEXT NOT NULL
);
"""

# The schema this code writes (PRAGMA user_version; PostgreSQL: the schema_version table).
# A database with a newer one is refused and never written.
SCHEMA_VERSION = 1

# What a failed database call raises, on either engine.
ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)

# How many run summaries to keep for `listens status`.
RUNS_KEPT = 50

# How long a write waits for another connection's lock (an operator's sqlite3
# shell with a transaction open, a long VACUUM) before it gives up with
# "database is locked". The warm job then still publishes what it fetched
# (LISTENS_DB_BUSY_SECONDS; README, "Configuration").
BUSY_TIMEOUT_S = 5.0

# SQLite's primary result codes (https://www.sqlite.org/rescode.html).
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_FULL = 13

# Below this much free space (or file-size limit), an I/O error is taken for a full disk.
_NEARLY_FULL_BYTES = 1024 * 1024


class MembersError(Exception):
    """Raised when a members change is invalid; nothing has been changed."""


class DatabaseError(Exception):
    """Raised when the members database cannot be opened or created."""

    def __init__(self, message: str, *, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


@dataclasses.dataclass(frozen=True)
class Member:
    """A site member with a linked Last.fm account."""

    id: int
    username: str
    lastfm_username: str
    public: bool
    lastfm_status: str
    last_track: Track | None = None
    # When the warm job should poll the member next (app.schedule); None: now.
    next_poll_at: datetime | None = None


def describe_failure(error: Exception, path: Path | str, busy_timeout_s: float = BUSY_TIMEOUT_S) -> tuple[str, str]:
    """Given a database error, return its kind ("busy", "full", "readonly" or "error") and a one-line message.

    The message says what to do: a full disk and a read-only database are
    not a wrong LISTENS_DATABASE, and a lock held by somebody else passes.
    PostgreSQL adds "unavailable": its server cannot be reached.
    """
    if isinstance(error, psycopg.Error) or is_postgres(path):
        from app.warm import members_pg

        return members_pg.describe_failure(error, str(path), busy_timeout_s)
    code = getattr(error, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    number = getattr(error, "errno", None)
    where = repr(str(path))
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return "busy", (
            f"the members database {where} stayed locked by another connection for over {busy_timeout_s:g} s"
            " (an open sqlite3 shell or a VACUUM?); the next run stores what this one could not"
        )
    full = primary == _SQLITE_FULL or number in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    if full or (primary == _SQLITE_IOERR and _nearly_full(path)):
        return "full", (
            f"the members database {where} cannot grow: its disk is full (or a file-size limit is reached);"
            " free space on its file system"
        )
    if primary == _SQLITE_READONLY or number == errno.EROFS:
        return "readonly", (
            f"the members database {where} is read-only; give the warm job's user write access to it,"
            " its -wal and -shm files and its folder, or remount its file system read-write"
        )
    detail = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return "error", (
        f"cannot open the members database {where}: {detail}; check LISTENS_DATABASE and its folder's permissions"
    )


def _nearly_full(path: Path) -> bool:
    """Return whether path's file system, or this process's file-size limit, leaves almost no room.

    SQLite reports a failed resize of its -shm file as a plain "disk I/O
    error"; this tells a full disk from a broken one.
    """
    limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if limit != resource.RLIM_INFINITY and limit < _NEARLY_FULL_BYTES:
        return True
    try:
        status = os.statvfs(path.parent)
    except OSError:
        return False
    return status.f_bavail * status.f_frsize < _NEARLY_FULL_BYTES


def is_postgres(database: object) -> bool:
    """Return whether LISTENS_DATABASE names a PostgreSQL database (a URL) rather than a SQLite file."""

    return is_url(database)


def connect(path: Path | str, *, busy_timeout_s: float = BUSY_TIMEOUT_S, read_only: bool = False) -> sqlite3.Connection:
    """Open (and create, with its folder) the members database at path, or at a postgresql:// URL.

    busy_timeout_s is how long each statement waits for another
    connection's write lock before raising "database is locked". read_only
    opens an existing database as it is, for reports: nothing is created or
    migrated, and every write through the connection fails.
    """
    if is_postgres(path):
        from app.warm import members_pg

        return members_pg.connect(str(path), busy_timeout_s, read_only=read_only)
    path = Path(path)
    connection = None
    try:
        if read_only:
            uri = f"{path.resolve().as_uri()}?mode=ro"
            connection = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, isolation_level=None)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            connection.close()
            raise DatabaseError(
                f"the members database {str(path)!r} has schema version {version}, newer than this release's"
                f" {SCHEMA_VERSION}; upgrade listens on this host (nothing was written)",
                kind="newer",
            )
        connection.execute("PRAGMA foreign_keys = ON")
        if not read_only:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.executescript(SCHEMA)
            _migrate(connection)
            if version < SCHEMA_VERSION:
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except (OSError, sqlite3.Error) as error:
        if connection is not None:
            connection.close()
        kind, message = describe_failure(error, path, busy_timeout_s)
        raise DatabaseError(message, kind=kind) from error
    connection.row_factory = sqlite3.Row
    return connection


def _migrate(connection: sqlite3.Connection) -> None:
    """Add the columns later versions introduced to a database an earlier version created."""
    columns = {row[1] for row in connection.execute("PRAGMA table_info(members)")}
    if "next_poll_at" not in columns:
        connection.execute("ALTER TABLE members ADD COLUMN next_poll_at TEXT")


def validate_username(username: str) -> str:
    """Return username if it is a valid site member name; raise MembersError otherwise."""
    if not SITE_USERNAME.fullmatch(username):
        raise MembersError(
            f"{username!r} is not a valid member name; use 1-30 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return username


def validate_lastfm_username(lastfm_username: str) -> str:
    """Return lastfm_username if Last.fm could have issued it; raise MembersError otherwise."""
    if not LASTFM_USERNAME.fullmatch(lastfm_username):
        raise MembersError(
            f"{lastfm_username!r} is not a valid Last.fm username; expected 1-15 letters, digits, '_' or '-'"
        )
    return lastfm_username


def _find(connection: sqlite3.Connection, username: str) -> sqlite3.Row:
    row = connection.execute("SELECT * FROM members WHERE lower(username) = lower(?)", (username,)).fetchone()
    if row is None:
        raise MembersError(f"no member named {username!r}; see 'listens users list'")
    return row


def add_member(
    connection: sqlite3.Connection, username: str, lastfm_username: str, *, public: bool, now: datetime
) -> Member:
    """Add a member; raise MembersError for an invalid name or a duplicate."""
    validate_username(username)
    validate_lastfm_username(lastfm_username)
    with connection:
        connection.execute("BEGIN IMMEDIATE")
        existing = connection.execute(
            "SELECT username, lastfm_username FROM members"
            " WHERE lower(username) = lower(?) OR lower(lastfm_username) = lower(?)",
            (username, lastfm_username),
        ).fetchone()
        if existing is not None:
            if existing["username"].lower() == username.lower():
                raise MembersError(f"a member named {existing['username']!r} already exists")
            raise MembersError(f"Last.fm user {lastfm_username!r} is already linked to member {existing['username']!r}")
        new_id = connection.execute(
            "INSERT INTO members (username, lastfm_username, public, created_at) VALUES (?, ?, ?, ?) RETURNING id",
            (username, lastfm_username, int(public), format_time(now)),
        ).fetchone()["id"]
    return Member(new_id, username, lastfm_username, public, "unknown")


def remove_member(connection: sqlite3.Connection, username: str) -> None:
    """Remove a member and their last known track; raise MembersError if unknown."""
    with connection:
        connection.execute("BEGIN IMMEDIATE")
        row = _find(connection, username)
        connection.execute("DELETE FROM members WHERE id = ?", (row["id"],))


def set_visibility(connection: sqlite3.Connection, username: str, public: bool) -> Member:
    """Make a member public or private; going private forgets their last known track."""
    with connection:
        connection.execute("BEGIN IMMEDIATE")
        row = _find(connection, username)
        connection.execute("UPDATE members SET public = ? WHERE id = ?", (int(public), row["id"]))
        if not public:
            connection.execute("DELETE FROM last_tracks WHERE member_id = ?", (row["id"],))
    return Member(row["id"], row["username"], row["lastfm_username"], public, row["lastfm_status"])


def set_lastfm_username(connection: sqlite3.Connection, username: str, lastfm_username: str) -> Member:
    """Link a member to another Last.fm account; the old account's track is forgotten."""
    validate_lastfm_username(lastfm_username)
    with connection:
        connection.execute("BEGIN IMMEDIATE")
        row = _find(connection, username)
        other = connection.execute(
            "SELECT username FROM members WHERE lower(lastfm_username) = lower(?) AND id != ?",
            (lastfm_username, row["id"]),
        ).fetchone()
        if other is not None:
            raise MembersError(f"Last.fm user {lastfm_username!r} is already linked to member {other['username']!r}")
        connection.execute(
            "UPDATE members SET lastfm_username = ?, lastfm_status = 'unknown' WHERE id = ?",
            (lastfm_username, row["id"]),
        )
        connection.execute("DELETE FROM last_tracks WHERE member_id = ?", (row["id"],))
    return Member(row["id"], row["username"], lastfm_username, bool(row["public"]), "unknown")


def _track_from_row(row: sqlite3.Row) -> Track | None:
    if row["fetched_at"] is None:
        return None
    return Track(
        username=row["username"],
        lastfm_username=row["lastfm_username"],
        artist=row["artist"],
        album=row["album"],
        track=row["track"],
        url=row["url"],
        image=row["image"],
        played_at=parse_time(row["played_at"]) if row["played_at"] is not None else None,
        now_playing=bool(row["now_playing"]),
        fetched_at=parse_time(row["fetched_at"]),
    )


def list_members(connection: sqlite3.Connection, *, public_only: bool = False) -> list[Member]:
    """Return members by username, each with their last known track."""
    rows = connection.execute(
        "SELECT m.*, t.artist, t.album, t.track, t.url, t.image, t.played_at, t.now_playing, t.fetched_at"
        " FROM members m LEFT JOIN last_tracks t ON t.member_id = m.id"
        + (" WHERE m.public = 1" if public_only else "")
        + " ORDER BY lower(m.username), m.id"
    ).fetchall()
    return [
        Member(
            row["id"],
            row["username"],
            row["lastfm_username"],
            bool(row["public"]),
            row["lastfm_status"],
            _track_from_row(row),
            parse_time(row["next_poll_at"]) if row["next_poll_at"] is not None else None,
        )
        for row in rows
    ]


class FetchStatus(StrEnum):
    """How a member's fetch ended, as stored in members.lastfm_status (FAILED is never stored)."""

    OK = "ok"
    NOT_FOUND = "not_found"
    PRIVATE = "private"
    # Transient: only the member's schedule changes.
    FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class FetchOutcome:
    """What one run learned about one member: a new track, no scrobbles, or gone."""

    member_id: int
    status: FetchStatus
    track: Track | None
    next_poll_at: datetime | None = None
    # The Last.fm account the run asked for; None: whichever is linked.
    lastfm_username: str | None = None

    def __post_init__(self) -> None:
        # Accept the stored spelling ("ok"), refuse anything that is not a status.
        object.__setattr__(self, "status", FetchStatus(self.status))


# Store a member's last known track, replacing the one before.
_UPSERT_TRACK = {
    "sqlite": "INSERT OR REPLACE INTO last_tracks"
    " (member_id, artist, album, track, url, image, played_at, now_playing, fetched_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "postgresql": "INSERT INTO last_tracks"
    " (member_id, artist, album, track, url, image, played_at, now_playing, fetched_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (member_id) DO UPDATE SET artist = excluded.artist, album = excluded.album,"
    " track = excluded.track, url = excluded.url, image = excluded.image,"
    " played_at = excluded.played_at, now_playing = excluded.now_playing, fetched_at = excluded.fetched_at",
}


def record_outcomes(connection: sqlite3.Connection, outcomes: Iterable[FetchOutcome]) -> None:
    """Store a run's successful fetches and permanent failures in one transaction.

    A member who was removed or made private while the run was fetching is
    skipped, so a run never brings back data the member asked to hide; so is
    a member linked to another Last.fm account since (the outcome's
    lastfm_username), so an old account's track is never stored for the new.

    A stored track is only ever replaced by one fetched at the same time or
    later, and on PostgreSQL one run at a time writes (an advisory lock): two
    warm hosts that both believe they hold the lease cannot interleave.
    """
    with connection:
        connection.execute("BEGIN IMMEDIATE")
        if hasattr(connection, "lock_tracks"):
            connection.lock_tracks()
        for outcome in outcomes:
            query = "SELECT 1 FROM members WHERE id = ? AND public = 1"
            parameters: tuple = (outcome.member_id,)
            if outcome.lastfm_username is not None:
                # Case-insensitive, like Last.fm's own names.
                query += " AND lower(lastfm_username) = lower(?)"
                parameters += (outcome.lastfm_username,)
            visible = connection.execute(query, parameters).fetchone()
            if visible is None:
                continue
            next_poll = format_time(outcome.next_poll_at) if outcome.next_poll_at is not None else None
            if outcome.status is FetchStatus.FAILED:
                connection.execute("UPDATE members SET next_poll_at = ? WHERE id = ?", (next_poll, outcome.member_id))
                continue
            connection.execute(
                "UPDATE members SET lastfm_status = ?, next_poll_at = ? WHERE id = ?",
                (outcome.status.value, next_poll, outcome.member_id),
            )
            if outcome.track is None:
                connection.execute("DELETE FROM last_tracks WHERE member_id = ?", (outcome.member_id,))
                continue
            track = outcome.track
            newer = connection.execute(
                "SELECT 1 FROM last_tracks WHERE member_id = ? AND fetched_at > ?",
                (outcome.member_id, format_time(track.fetched_at)),
            ).fetchone()
            if newer is not None:
                # Only forward: an older run's late write never replaces a newer track.
                continue
            connection.execute(
                _UPSERT_TRACK[getattr(connection, "dialect", "sqlite")],
                (
                    outcome.member_id,
                    track.artist,
                    track.album,
                    track.track,
                    track.url,
                    track.image,
                    format_time(track.played_at) if track.played_at is not None else None,
                    int(track.now_playing),
                    format_time(track.fetched_at),
                ),
            )


def record_run(
    connection: sqlite3.Connection, generation: int, finished_at: datetime, exit_code: int, summary: str
) -> None:
    """Keep a run's summary line for `listens status`, pruning old ones."""
    with connection:
        connection.execute(
            "INSERT INTO runs (generation, finished_at, exit_code, summary) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (generation) DO UPDATE SET finished_at = excluded.finished_at,"
            " exit_code = excluded.exit_code, summary = excluded.summary",
            (generation, format_time(finished_at), exit_code, summary),
        )
        connection.execute(
            "DELETE FROM runs WHERE generation NOT IN (SELECT generation FROM runs ORDER BY generation DESC LIMIT ?)",
            (RUNS_KEPT,),
        )


def last_run(connection: sqlite3.Connection) -> sqlite3.Row | None:
    """Return the newest recorded run; None when there is none, or no runs table (a database opened read-only)."""
    if not _has_table(connection, "runs"):
        return None
    return connection.execute("SELECT * FROM runs ORDER BY generation DESC LIMIT 1").fetchone()


# Whether a table exists, per engine, like _UPSERT_TRACK.
_TABLE_EXISTS = {
    "sqlite": "SELECT count(*) > 0 AS present FROM sqlite_master WHERE type = 'table' AND name = ?",
    "postgresql": "SELECT to_regclass(?) IS NOT NULL AS present",
}


def _has_table(connection: sqlite3.Connection, name: str) -> bool:
    sql = _TABLE_EXISTS[getattr(connection, "dialect", "sqlite")]
    return bool(connection.execute(sql, (name,)).fetchone()["present"])


def last_published_generation(connection: sqlite3.Connection) -> int | None:
    """Return the newest generation a run recorded here published (or restored), None if none did."""
    row = connection.execute(
        "SELECT MAX(generation) FROM runs WHERE summary LIKE 'warm outcome=published %'"
        " OR summary LIKE 'warm outcome=restored %'"
    ).fetchone()
    return row[0]

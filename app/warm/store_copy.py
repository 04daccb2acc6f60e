"""Copy a members database between engines: SQLite to PostgreSQL and back.

Every row keeps its id, so members keep their last known tracks and poll
schedule; the target must be empty and is filled in one transaction.
"""

from __future__ import annotations

from pathlib import Path

from app.core.settings import is_url
from app.warm import members
from app.warm import members_pg

# Tables in dependency order, each with its columns (the same on both engines).
TABLES = {
    "members": ("id", "username", "lastfm_username", "public", "lastfm_status", "created_at", "next_poll_at"),
    "last_tracks": (
        "member_id",
        "artist",
        "album",
        "track",
        "url",
        "image",
        "played_at",
        "now_playing",
        "fetched_at",
    ),
    "runs": ("generation", "finished_at", "exit_code", "summary"),
}


class CopyError(Exception):
    """Raised when a copy cannot start; nothing has been written."""


def _location(database: str) -> Path | str:
    return database.strip() if is_url(database) else Path(database).expanduser()


def describe(database: str) -> str:
    """Return database for messages, without its password."""
    return members_pg.redact(database.strip()) if is_url(database) else repr(database)


def copy_database(source: str, target: str) -> dict[str, int]:
    """Copy every row of source into the empty target; return how many rows per table."""
    if not is_url(source) and not Path(source).expanduser().is_file():
        raise CopyError(f"no SQLite database at {source!r}; --from takes an existing file or a postgresql:// URL")
    reader = members.connect(_location(source))
    try:
        rows = {
            table: [
                tuple(row[column] for column in columns)
                for row in reader.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {columns[0]}").fetchall()
            ]
            for table, columns in TABLES.items()
        }
    finally:
        reader.close()
    writer = members.connect(_location(target))
    try:
        _write(writer, target, rows)
    except members.ERRORS as error:
        _, message = members.describe_failure(error, _location(target))
        raise CopyError(message) from None
    finally:
        writer.close()
    return {table: len(table_rows) for table, table_rows in rows.items()}


def _write(writer, target: str, rows: dict[str, list[tuple]]) -> None:
    with writer:
        writer.execute("BEGIN IMMEDIATE")
        for table in TABLES:
            if writer.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None:
                raise CopyError(f"the target database {describe(target)} already has {table}; copy into an empty one")
        for table, columns in TABLES.items():
            statement = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
            for row in rows[table]:
                writer.execute(statement, row)
        if getattr(writer, "dialect", "sqlite") == "postgresql":
            # New members continue after the copied ids.
            writer.execute(
                "SELECT setval(pg_get_serial_sequence('members', 'id'), (SELECT max(id) FROM members))"
                " WHERE EXISTS (SELECT 1 FROM members)"
            )

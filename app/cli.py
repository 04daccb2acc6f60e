"""The `users` and `listens` command groups: thin wrappers over the library.

Write-side modules (members, publisher, warm) are imported inside the command
bodies, so serving web requests never loads them.
"""

from __future__ import annotations

import json
from datetime import UTC
from datetime import datetime

import click
from flask import Flask
from flask import current_app
from flask.cli import AppGroup

from app.core import cache
from app.core.exits import EXIT_CONFIG
from app.core.snapshot import SnapshotInvalidError
from app.core.snapshot import State
from app.core.snapshot import decode_pointer
from app.core.snapshot import format_time
from app.core.snapshot import legacy_keys
from app.core.snapshot import pointer_key
from app.core.snapshot import snapshot_key

users = AppGroup("users", help="Manage the members whose listens are shown.")
listens = AppGroup("listens", help="Operate the listens cache: status, warm, purge-legacy.")


class ConfigError(click.ClickException):
    """Raised for bad configuration; exits 2 like the warm script."""

    exit_code = EXIT_CONFIG


def _settings():
    return current_app.extensions["listens"].settings


def _open_members():
    from app.warm import members

    try:
        return members.connect(_settings().database)
    except members.DatabaseError as error:
        raise ConfigError(str(error)) from None


def _members_call(function, *args, **kwargs):
    from app.warm import members

    connection = _open_members()
    try:
        return function(connection, *args, **kwargs)
    except members.MembersError as error:
        raise click.ClickException(str(error)) from None
    finally:
        connection.close()


@users.command("add")
@click.argument("name")
@click.option("--lastfm", "lastfm_username", required=True, help="The member's Last.fm username.")
@click.option("--private", is_flag=True, help="Add the member without showing their listens.")
def users_add(name: str, lastfm_username: str, private: bool) -> None:
    """Add member NAME linked to a Last.fm account."""
    from app.warm import members

    member = _members_call(members.add_member, name, lastfm_username, public=not private, now=datetime.now(UTC))
    visibility = "public" if member.public else "private"
    click.echo(f"added {member.username} (Last.fm {member.lastfm_username}, {visibility})")


@users.command("list")
def users_list() -> None:
    """List members, their Last.fm names, visibility and last known track."""
    from app.warm import members

    rows = _members_call(members.list_members)
    if not rows:
        click.echo("no members; add one with 'listens users add NAME --lastfm LASTFM_NAME'")
        return
    for member in rows:
        track = member.last_track
        known = f"{track.artist} - {track.track}" if track is not None else "-"
        visibility = "public" if member.public else "private"
        click.echo(f"{member.username}\t{member.lastfm_username}\t{visibility}\t{member.lastfm_status}\t{known}")


@users.command("remove")
@click.argument("name")
def users_remove(name: str) -> None:
    """Remove member NAME and forget their last known track."""
    from app.warm import members

    _members_call(members.remove_member, name)
    click.echo(f"removed {name}; they disappear from the page on the next warm run")


@users.command("set-visibility")
@click.argument("name")
@click.argument("visibility", type=click.Choice(["public", "private"]))
def users_set_visibility(name: str, visibility: str) -> None:
    """Show (public) or hide (private) member NAME's listens."""
    from app.warm import members

    member = _members_call(members.set_visibility, name, visibility == "public")
    click.echo(f"{member.username} is now {visibility}; the page follows on the next warm run")


@users.command("set-lastfm")
@click.argument("name")
@click.argument("lastfm_username")
def users_set_lastfm(name: str, lastfm_username: str) -> None:
    """Link member NAME to another Last.fm account."""
    from app.warm import members

    member = _members_call(members.set_lastfm_username, name, lastfm_username)
    click.echo(f"{member.username} is now linked to Last.fm {member.lastfm_username}")


@listens.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the same facts as one JSON object, for scripts.")
def listens_status(as_json: bool) -> None:
    """Show the published snapshot's state; exit 1 unless it is fresh or empty.

    Monitoring can call it: exit 0 means fresh or empty, 1 means stale,
    warming or unavailable. It reads memcached and, on the warm host, the
    members database for the last run's summary; it writes neither.
    """
    settings = _settings()
    now = datetime.now(UTC)
    reading = current_app.extensions["listens"].reader.read(now)
    snapshot = reading.snapshot
    state = reading.state.value + (f" ({reading.reason})" if reading.reason else "")
    reachable = " reachable" if reading.reachable else " UNREACHABLE"
    client = cache.connect(settings.memcached_servers)
    lines = [
        ("state", state),
        ("memcached", ",".join(settings.memcached_servers) + reachable),
        ("pointer", _describe_pointer(client, settings.key_prefix)),
        ("generation", str(reading.generation) if snapshot is not None else "-"),
        ("last updated", snapshot.last_updated.isoformat() if snapshot is not None else "-"),
        ("age", f"{reading.age_s:.0f} s" if reading.age_s is not None else "-"),
        ("tracks", str(len(snapshot.tracks)) if snapshot is not None else "-"),
        ("snapshot", _describe_snapshot(client, settings.key_prefix, reading.generation)),
        ("legacy keys", _describe_legacy_keys(client, settings.key_prefix)),
        ("last run", _describe_last_run(settings.database)),
    ]
    if as_json:
        click.echo(json.dumps(_status_object(reading, settings, dict(lines))))
    else:
        for label, value in lines:
            click.echo(f"{label + ':':<14}{value}")
    if reading.state not in (State.FRESH, State.EMPTY):
        raise SystemExit(1)


def _status_object(reading, settings, described: dict[str, str]) -> dict:
    """Return listens status's facts as one JSON-ready object: values typed, descriptions as printed."""
    snapshot = reading.snapshot
    return {
        "state": reading.state.value,
        "reason": reading.reason or None,
        "memcached": {"servers": list(settings.memcached_servers), "reachable": reading.reachable},
        "pointer": described["pointer"],
        "generation": reading.generation,
        "lastUpdated": format_time(snapshot.last_updated) if snapshot is not None else None,
        "ageSeconds": round(reading.age_s, 3) if reading.age_s is not None else None,
        "tracks": len(snapshot.tracks) if snapshot is not None else None,
        "snapshot": described["snapshot"] if snapshot is not None else None,
        "legacyKeys": described["legacy keys"],
        "lastRun": described["last run"],
    }


def _describe_pointer(client, prefix: str) -> str:
    key = pointer_key(prefix)
    try:
        raw = cache.confirmed_get(client, key)
    except cache.CacheUnavailableError as error:
        return f"{key} unknown ({error})"
    if raw is None:
        return f"{key} missing"
    try:
        pointer = decode_pointer(raw)
    except SnapshotInvalidError as error:
        return f"{key} INVALID ({error})"
    previous = pointer.previous if pointer.previous is not None else "-"
    return f"{key} -> generation {pointer.generation}, previous {previous}"


def _describe_snapshot(client, prefix: str, generation: int | None) -> str:
    if generation is None:
        return "-"
    key = snapshot_key(prefix, generation)
    try:
        raw = cache.confirmed_get(client, key)
    except cache.CacheUnavailableError as error:
        return f"{key} unknown ({error})"
    # The reader may show a snapshot it parsed earlier that memcached has evicted since.
    return f"{key}, {len(raw)} bytes" if raw is not None else f"{key}, evicted since it was read"


def _describe_legacy_keys(client, prefix: str) -> str:
    try:
        present = [key for key in legacy_keys(prefix) if cache.confirmed_get(client, key) is not None]
    except cache.CacheUnavailableError as error:
        return f"unknown ({error})"
    return ", ".join(present) + " (remove with 'listens listens purge-legacy')" if present else "none"


def _describe_last_run(database) -> str:
    from app.warm import members

    # Runs are recorded on the warm host; a web host has no database.
    if hasattr(database, "exists") and not database.exists():
        return f"none recorded here (no database at {str(database)!r}; runs are recorded on the warm host)"
    try:
        # Read-only: a report creates no tables and migrates nothing.
        connection = members.connect(database, read_only=True)
    except members.DatabaseError as error:
        return f"unknown ({error})"
    try:
        run = members.last_run(connection)
    except members.ERRORS as error:
        return f"unknown ({members.describe_failure(error, database)[1]})"
    finally:
        connection.close()
    return f"{run['finished_at']} {run['summary']}" if run is not None else "none recorded"


@click.group()
def db() -> None:
    """Move the members database between SQLite and PostgreSQL."""


@db.command("copy")
@click.option("--from", "source", required=True, help="The database to read: a SQLite file or a postgresql:// URL.")
@click.option("--to", "target", required=True, help="The empty database to fill: a SQLite file or a postgresql:// URL.")
def db_copy(source: str, target: str) -> None:
    """Copy members, visibility, last known tracks, schedule and runs into an empty database.

    One transaction: the target gets everything or nothing. The source is
    only read. A password in either URL is never printed.
    """
    from app.warm import members
    from app.warm import store_copy

    try:
        counts = store_copy.copy_database(source, target)
    except members.DatabaseError as error:
        raise ConfigError(str(error)) from None
    except store_copy.CopyError as error:
        raise ConfigError(str(error)) from None
    click.echo(
        f"copied {counts['members']} members, {counts['last_tracks']} last known tracks"
        f" and {counts['runs']} runs to {store_copy.describe(target)}"
    )


@listens.command("warm")
def listens_warm() -> None:
    """Run one warm cycle now: the same job the systemd timer runs."""
    from app.core.settings import SettingsError
    from app.warm import job

    settings = _settings()
    try:
        settings.require_lastfm_key()
    except SettingsError as error:
        raise ConfigError(str(error)) from None
    job.configure_logging()
    result = job.run(settings)
    raise SystemExit(result.exit_code)


@listens.command("purge-legacy")
def listens_purge_legacy() -> None:
    """Delete the old system's cache keys (never read as data)."""
    from app.warm import publisher

    settings = _settings()
    client = cache.connect(settings.memcached_servers, timeout_ms=cache.WRITER_TIMEOUT_MS)
    try:
        deleted = publisher.purge_legacy_keys(client, settings.key_prefix)
    except publisher.PublishError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"deleted {', '.join(deleted)}" if deleted else "no legacy keys found")


def init_app(app: Flask) -> None:
    app.cli.add_command(users)
    app.cli.add_command(listens)
    app.cli.add_command(db)


def main() -> None:
    """The installed `listens` command: this app's Flask CLI, with no --app and from any directory."""
    from flask.cli import FlaskGroup

    from app import create_app

    group = FlaskGroup(
        name="listens",
        create_app=create_app,
        help="Members, operations and the development server of the listens site (settings from LISTENS_* variables).",
    )
    group.main(prog_name="listens")

"""Settings read from the environment; the only module that touches os.environ.

Every value is parsed to its own type here, at the edge, and an invalid value
raises SettingsError naming the variable and the expected form. Below this
module, settings travel as a frozen Settings object passed in as an argument.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from app.core.exits import EXIT_CONFIG

REAL_LASTFM_URL = "https://ws.audioscrobbler.com/2.0/"
DEFAULT_MEMCACHED = "127.0.0.1:11211"
DEFAULT_KEY_PREFIX = "user-listens"
INSTANCE_FOLDER = Path(__file__).resolve().parent.parent / "instance"
DEFAULT_DATABASE = INSTANCE_FOLDER / "listens.sqlite3"
# node_exporter's textfile directory on Debian (prometheus-node-exporter).
DEFAULT_METRICS_FILE = Path("/var/lib/prometheus/node-exporter/listens_warm.prom")

# memcached reads an expiry above 30 days as an absolute Unix time.
MEMCACHED_MAX_RELATIVE_EXPIRY_S = 30 * 24 * 3600

_SERVER_PATTERN = re.compile(r"^(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>[0-9]{1,5})$")
_PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class SettingsError(Exception):
    """Raised when an environment variable is missing or cannot be parsed."""

    exit_code = EXIT_CONFIG


@dataclasses.dataclass(frozen=True)
class Settings:
    """The whole configuration of the web app and the warm job."""

    lastfm_api_key: str | None = dataclasses.field(default=None, repr=False)
    memcached_servers: tuple[str, ...] = (DEFAULT_MEMCACHED,)
    lastfm_url: str = REAL_LASTFM_URL
    # A SQLite file, or a postgresql:// URL (str) shared by several warm hosts.
    database: Path | str = DEFAULT_DATABASE
    lock_file: Path | None = None
    key_prefix: str = DEFAULT_KEY_PREFIX
    fresh_s: int = 420
    max_stale_s: int = 86400
    items: int = 8
    snapshot_items: int = 50
    concurrency: int = 8
    rate: float = 5.0
    deadline_s: float = 240.0
    max_poll_interval_s: int = 3600
    pointer_recheck_s: float = 0.5
    # The warm job's node_exporter textfile; None: write none.
    metrics_file: Path | None = DEFAULT_METRICS_FILE
    # How long a members-database write waits for another connection's lock.
    db_busy_s: float = 5.0
    refresh_s: int = 60

    @property
    def lock_path(self) -> Path:
        """Return the local lock file: explicit, or beside the database."""
        if self.lock_file is not None:
            return self.lock_file
        database = self.database if isinstance(self.database, Path) else DEFAULT_DATABASE
        return database.with_name(database.name + ".lock")

    @property
    def uses_real_lastfm(self) -> bool:
        return urlsplit(self.lastfm_url).hostname == urlsplit(REAL_LASTFM_URL).hostname

    def require_lastfm_key(self) -> None:
        """Raise SettingsError when the real Last.fm is configured without a key."""
        if self.uses_real_lastfm and not self.lastfm_api_key:
            raise SettingsError(
                f"LASTFM_API_KEY is not set; the real Last.fm API ({REAL_LASTFM_URL})"
                " needs one, or set LISTENS_LASTFM_URL to a fake Last.fm server"
            )


def _parse_int(name: str, raw: str, minimum: int, maximum: int) -> int:
    try:
        if not re.fullmatch(r"[+-]?[0-9]+", raw.strip()):
            raise ValueError(raw)
        value = int(raw.strip(), 10)
    except ValueError:
        raise SettingsError(
            f"{name}={raw!r} is not a whole number; expected an integer from {minimum} to {maximum}"
        ) from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"{name}={raw!r} is out of range; expected an integer from {minimum} to {maximum}")
    return value


def _parse_float(name: str, raw: str, minimum: float, maximum: float) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(
            f"{name}={raw!r} is not a number; expected a number from {minimum:g} to {maximum:g}"
        ) from None
    if value != value or not minimum <= value <= maximum:
        raise SettingsError(f"{name}={raw!r} is out of range; expected a number from {minimum:g} to {maximum:g}")
    return value


def parse_servers(raw: str, name: str = "LISTENS_MEMCACHED") -> tuple[str, ...]:
    """Parse a comma-separated host:port list into a tuple of host:port strings."""
    parts = [part.strip() for part in raw.split(",")]
    if not any(parts):
        raise SettingsError(f"{name} is empty; expected host:port[,host:port]")
    servers = []
    for part in parts:
        match = _SERVER_PATTERN.fullmatch(part)
        if match is None or not 1 <= int(match["port"]) <= 65535:
            raise SettingsError(f"{name} has {part!r}, which is not host:port; expected host:port[,host:port]")
        if match["host"].startswith("["):
            # The libmemcached bundled with pylibmc resolves IPv4 only: an IPv6
            # address would fail every run with a host lookup error.
            raise SettingsError(
                f"{name} has {part!r}, an IPv6 address, which the memcached client cannot reach;"
                " use an IPv4 address (127.0.0.1:11211) or a name that resolves to one"
            )
        if part not in servers:
            servers.append(part)
    return tuple(servers)


def _parse_url(name: str, raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", value):
        raise SettingsError(f"{name}={raw!r} is not an http(s) URL; expected for example {REAL_LASTFM_URL}")
    return value if value.endswith("/") else value + "/"


def _parse_path(name: str, raw: str) -> Path:
    value = raw.strip()
    if not value:
        raise SettingsError(f"{name} is empty; expected a file path")
    return Path(value).expanduser()


# LISTENS_DATABASE values that name a PostgreSQL database (any other value is a SQLite file).
URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(database: object) -> bool:
    """Return whether a LISTENS_DATABASE value names a PostgreSQL database rather than a SQLite file."""
    return isinstance(database, str) and database.strip().lower().startswith(URL_SCHEMES)


def _parse_database(raw: str) -> Path | str:
    """Parse LISTENS_DATABASE: a postgresql:// URL stays a string, anything else is a SQLite file path.

    The URL is checked when the database is opened, so the CLI and the warm
    job both refuse a bad one with a one-line error (exit 2) that hides its password.
    """
    if is_url(raw):
        return raw.strip()
    return _parse_path("LISTENS_DATABASE", raw)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from LASTFM_API_KEY and the LISTENS_* variables.

    Unset or empty variables take their defaults. Raise SettingsError with a
    one-line message for the first invalid value.
    """
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(name)
        return value if value is not None and value.strip() != "" else None

    values: dict[str, object] = {}
    api_key = get("LASTFM_API_KEY")
    if api_key is not None:
        values["lastfm_api_key"] = api_key.strip()
    if "LISTENS_MEMCACHED" in env:
        values["memcached_servers"] = parse_servers(env["LISTENS_MEMCACHED"])
    if (raw := get("LISTENS_LASTFM_URL")) is not None:
        values["lastfm_url"] = _parse_url("LISTENS_LASTFM_URL", raw)
    if (raw := get("LISTENS_DATABASE")) is not None:
        values["database"] = _parse_database(raw)
    if (raw := get("LISTENS_LOCK_FILE")) is not None:
        values["lock_file"] = _parse_path("LISTENS_LOCK_FILE", raw)
    if (raw := get("LISTENS_KEY_PREFIX")) is not None:
        if not _PREFIX_PATTERN.fullmatch(raw.strip()):
            raise SettingsError(
                f"LISTENS_KEY_PREFIX={raw!r} is not a valid key prefix; expected 1-64 letters, digits, '_', '.' or '-'"
            )
        values["key_prefix"] = raw.strip()
    integers = {
        "LISTENS_FRESH_SECONDS": ("fresh_s", 1, 7 * 86400),
        "LISTENS_MAX_STALE_SECONDS": ("max_stale_s", 60, MEMCACHED_MAX_RELATIVE_EXPIRY_S),
        "LISTENS_ITEMS": ("items", 1, 50),
        "LISTENS_CONCURRENCY": ("concurrency", 1, 64),
        "LISTENS_MAX_POLL_INTERVAL_SECONDS": ("max_poll_interval_s", 300, 7 * 86400),
        # How often an open page asks for a newer list; 0 turns the refresh off.
        "LISTENS_REFRESH_SECONDS": ("refresh_s", 0, 3600),
    }
    for name, (field, minimum, maximum) in integers.items():
        if (raw := get(name)) is not None:
            values[field] = _parse_int(name, raw, minimum, maximum)
    if (raw := get("LISTENS_RATE")) is not None:
        values["rate"] = _parse_float("LISTENS_RATE", raw, 0, 1000)
    if (raw := get("LISTENS_POINTER_RECHECK_SECONDS")) is not None:
        values["pointer_recheck_s"] = _parse_float("LISTENS_POINTER_RECHECK_SECONDS", raw, 0, 60)
    if (raw := get("LISTENS_DEADLINE_SECONDS")) is not None:
        values["deadline_s"] = _parse_float("LISTENS_DEADLINE_SECONDS", raw, 1, 3600)
    if "LISTENS_METRICS_FILE" in env:
        values["metrics_file"] = _parse_metrics_file(env["LISTENS_METRICS_FILE"])
    if (raw := get("LISTENS_DB_BUSY_SECONDS")) is not None:
        values["db_busy_s"] = _parse_float("LISTENS_DB_BUSY_SECONDS", raw, 0.1, 60)
    return Settings(**values)


def _parse_metrics_file(raw: str) -> Path | None:
    """Parse LISTENS_METRICS_FILE: empty turns the textfile off; else a path ending in .prom."""
    value = raw.strip()
    if not value:
        return None
    if not value.endswith(".prom") or value.endswith("/.prom"):
        # node_exporter's textfile collector reads *.prom files only.
        raise SettingsError(
            f"LISTENS_METRICS_FILE={raw!r} does not end in .prom; expected a file such as"
            f" {DEFAULT_METRICS_FILE}, or empty for none"
        )
    return Path(value).expanduser()

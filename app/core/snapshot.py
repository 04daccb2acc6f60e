"""The snapshot format (version 2): tracks, keys, encoding and validation.

Pure code: no I/O, no memcached, no Flask. The camelCase JSON names of the
snapshot and the pointer live only in this module.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import unicodedata
from collections.abc import Iterable
from datetime import UTC
from datetime import datetime
from urllib.parse import quote

SCHEMA_VERSION = 2

# Longest text kept per field; a scrobbled name can be anything, 10 KB included.
MAX_TEXT_CHARS = 300
MAX_URL_CHARS = 1024

LASTFM_PAGE_HOSTS = frozenset({"www.last.fm", "last.fm", "m.last.fm"})
LASTFM_IMAGE_HOSTS = frozenset({"lastfm.freetls.fastly.net", "lastfm-img2.akamaized.net"})
LASTFM_IMAGE_HOST_SUFFIXES = (".last.fm", ".lastfm.com", ".lst.fm")

# Lone surrogates (a JSON "\ud800" escape decodes to one) cannot be encoded
# as UTF-8: kept, they would break the snapshot's encoding or the page's.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SURROGATES = re.compile(r"[\ud800-\udfff]")

# Characters with no visible effect wherever they stand: zero-width space,
# word joiner and the invisible operators, BOM, Mongolian vowel separator,
# the Hangul fillers, the language tag. A name made of them looks blank.
_INVISIBLE = re.compile("[\u200b\u2060-\u2064\ufeff\u180e\u115f\u1160\u3164\uffa0\U000e0001]")
# A subdivision flag: black flag, tag letters or digits, cancel tag (🏴 + "gbsct" + cancel).
_TAG_FLAG = re.compile("\U0001f3f4[\U000e0030-\U000e0039\U000e0061-\U000e007a]{1,6}\U000e007f")
_TAGS = re.compile("[\U000e0000-\U000e007f]")
_ZWNJ = "\u200c"
_ZWJ = "\u200d"
_DIRECTION_MARKS = frozenset("\u200e\u200f\u061c")
# The longest run of combining marks kept on one character: real names stack
# at most three or four (Vietnamese tones, Hebrew points, Tibetan stacks);
# more is a "tower" that draws over the lines around it.
MAX_COMBINING_MARKS = 4


class State(enum.Enum):
    """What the page, the API and the health check report about the data."""

    WARMING = "warming"
    FRESH = "fresh"
    STALE = "stale"
    EMPTY = "empty"
    UNAVAILABLE = "unavailable"


class SnapshotInvalidError(ValueError):
    """Raised when a cached value is not a valid version-2 snapshot or pointer."""


@dataclasses.dataclass(frozen=True)
class Track:
    """One member's most recent track, as shown on the page."""

    username: str
    lastfm_username: str
    artist: str
    album: str
    track: str
    url: str
    image: str
    played_at: datetime | None
    now_playing: bool
    fetched_at: datetime

    def sort_key(self) -> tuple:
        """Return the key that sorts now playing first, then newest first, then by username."""
        played = self.played_at.timestamp() if self.played_at is not None else float("-inf")
        return (0 if self.now_playing else 1, -played, self.username.lower(), self.username)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One published snapshot: a generation's tracks and its run statistics."""

    generation: int
    last_updated: datetime
    tracks: tuple[Track, ...]
    stats: dict[str, int | float]
    version: int = SCHEMA_VERSION


@dataclasses.dataclass(frozen=True)
class Pointer:
    """The value of the pointer key: the current generation and the one before."""

    generation: int
    previous: int | None


def pointer_key(prefix: str) -> str:
    return f"{prefix}:v{SCHEMA_VERSION}:current"


def snapshot_key(prefix: str, generation: int) -> str:
    return f"{prefix}:v{SCHEMA_VERSION}:snap:{generation}"


def lease_key(prefix: str) -> str:
    return f"{prefix}:v{SCHEMA_VERSION}:lease"


def legacy_keys(prefix: str) -> tuple[str, str]:
    """Return the old system's keys: never read as data, only reported and purged."""
    return (f"{prefix}:recent", f"{prefix}:v2:recent")


def generation_from(moment: datetime) -> int:
    """Return the generation of a run started at moment: microseconds since the epoch."""
    return int(moment.timestamp() * 1_000_000)


def utc_now() -> datetime:
    """Return the wall-clock time, aware, in UTC: "now" wherever no test passes a fixed clock."""
    return datetime.now(UTC)


def format_time(moment: datetime) -> str:
    """Format an aware datetime as ISO 8601 UTC with a Z, to the second."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """Parse an ISO 8601 timestamp with a zone into an aware UTC datetime; raise ValueError otherwise."""
    if not isinstance(text, str) or len(text) > 40:
        raise ValueError(f"{text!r} is not an ISO 8601 timestamp")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return moment.astimezone(UTC)


def clean_text(value: object, limit: int = MAX_TEXT_CHARS) -> str:
    """Return value as a bounded single-line string a reader can see.

    Control and direction-override characters go; so do characters with no
    visible effect where they stand (see _remove_invisible), and combining
    marks past MAX_COMBINING_MARKS on one character. A name of nothing else
    comes out "", which callers treat as missing.
    """
    if not isinstance(value, str):
        return ""
    text = _CONTROL_CHARACTERS.sub("", " ".join(value.splitlines()))
    text = _cap_combining_marks(_remove_invisible(text)).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def _joins(character: str, *, symbols: bool) -> bool:
    """Return whether character can sit beside a joiner: a letter or mark (or, for ZWJ, a symbol such as an emoji)."""
    category = unicodedata.category(character)
    return category[0] in ("L", "M") or (symbols and category[0] == "S")


def _remove_invisible(text: str) -> str:
    """Remove what has no visible effect where it stands; keep exactly what names need.

    Kept: ZWNJ between letters (Persian and Indic spelling), ZWJ between
    letters or symbols (emoji sequences, Indic conjuncts), the tag
    characters of a subdivision flag, direction marks in text that holds
    right-to-left letters. Removed: the same characters anywhere else, and
    every _INVISIBLE character.
    """
    parts = []
    position = 0
    for flag in _TAG_FLAG.finditer(text):
        parts.append(_TAGS.sub("", text[position : flag.start()]))
        parts.append(flag.group())
        position = flag.end()
    parts.append(_TAGS.sub("", text[position:]))
    text = _INVISIBLE.sub("", "".join(parts))
    right_to_left = any(
        unicodedata.bidirectional(character) in ("R", "AL") and character not in _DIRECTION_MARKS for character in text
    )
    kept = []
    for index, character in enumerate(text):
        if character in (_ZWNJ, _ZWJ):
            before = text[index - 1] if index > 0 else " "
            after = text[index + 1] if index + 1 < len(text) else " "
            symbols = character == _ZWJ
            if not (_joins(before, symbols=symbols) and _joins(after, symbols=symbols)):
                continue
        elif character in _DIRECTION_MARKS and not right_to_left:
            continue
        kept.append(character)
    return "".join(kept)


def _cap_combining_marks(text: str) -> str:
    kept = []
    run = 0
    for character in text:
        if unicodedata.category(character) in ("Mn", "Me"):
            run += 1
            if run > MAX_COMBINING_MARKS:
                continue
        else:
            run = 0
        kept.append(character)
    return "".join(kept)


def safe_page_url(url: object) -> str:
    """Return url as https on a Last.fm page host, or "" when it is anything else."""
    return _safe_url(url, lambda host: host in LASTFM_PAGE_HOSTS)


def safe_image_url(url: object) -> str:
    """Return url as https on a Last.fm image host, or "" when it is anything else."""
    return _safe_url(url, lambda host: host in LASTFM_IMAGE_HOSTS or host.endswith(LASTFM_IMAGE_HOST_SUFFIXES))


_URL_START = re.compile(r"^(?P<scheme>https?)://(?P<authority>[^/?#]*)(?P<rest>.*)$", re.IGNORECASE | re.DOTALL)
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def _safe_url(url: object, host_allowed) -> str:
    """Return url as https on an allowed host, read the way a browser's URL parser reads it; "" otherwise.

    Python's urlsplit and a browser disagree on hostile URLs (a browser reads
    "\\" as "/", decodes "%2e" in a host, maps full-width dots), so only the
    unambiguous form is accepted: "http(s)://", an authority with no
    user-info, no "\\", no percent-encoding, no port but the scheme's default,
    and a host compared after IDNA normalisation, as a browser resolves it.
    """
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        return ""
    if _CONTROL_CHARACTERS.search(url) or any(character.isspace() for character in url) or "\\" in url:
        return ""
    match = _URL_START.fullmatch(url)
    if match is None:
        return ""
    scheme, authority, rest = match["scheme"].lower(), match["authority"], match["rest"]
    if any(character in authority for character in "@%[]") or not authority:
        return ""
    host, colon, port = authority.partition(":")
    if colon and port != _DEFAULT_PORTS[scheme]:
        return ""
    host = _normalise_host(host)
    if not host or not host_allowed(host):
        return ""
    # Last.fm still sends some http:// links; the page only ever links https.
    return f"https://{host}{rest if rest.startswith('/') else '/' + rest}"


def _normalise_host(host: str) -> str:
    """Return host as a browser resolves it (IDNA: case, full-width dots, compatibility forms), or ""."""
    try:
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        return ""
    ascii_host = ascii_host.lower()
    if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)*", ascii_host):
        return ""
    return ascii_host


def profile_url(lastfm_username: str) -> str:
    return f"https://www.last.fm/user/{quote(lastfm_username, safe='')}"


def sort_tracks(tracks: Iterable[Track]) -> list[Track]:
    """Sort now playing first, then by playedAt descending, ties by username."""
    return sorted(tracks, key=Track.sort_key)


# -- encoding -----------------------------------------------------------------


def track_to_json(track: Track) -> dict:
    return {
        "username": track.username,
        "lastfmUsername": track.lastfm_username,
        "artist": track.artist,
        "album": track.album,
        "track": track.track,
        "url": track.url,
        "image": track.image,
        "playedAt": format_time(track.played_at) if track.played_at is not None else None,
        "nowPlaying": track.now_playing,
        "fetchedAt": format_time(track.fetched_at),
    }


def snapshot_to_json(snapshot: Snapshot) -> dict:
    return {
        "version": snapshot.version,
        "generation": snapshot.generation,
        "lastUpdated": format_time(snapshot.last_updated),
        "tracks": [track_to_json(track) for track in snapshot.tracks],
        "stats": dict(snapshot.stats),
    }


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """Encode a snapshot as canonical UTF-8 JSON, the exact bytes stored and read back."""
    return json.dumps(snapshot_to_json(snapshot), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def encode_pointer(pointer: Pointer) -> bytes:
    return json.dumps({"generation": pointer.generation, "previous": pointer.previous}, sort_keys=True).encode("utf-8")


# -- decoding and validation -----------------------------------------------------


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise SnapshotInvalidError(reason)


def _load_json(raw: object, what: str) -> object:
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    _require(isinstance(raw, bytes), f"{what} is a {type(raw).__name__}, not bytes")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        # Deeply nested arrays make the decoder raise RecursionError.
        raise SnapshotInvalidError(f"{what} is not JSON ({error.__class__.__name__})") from error


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def decode_pointer(raw: object) -> Pointer:
    """Decode and validate the pointer value; raise SnapshotInvalidError with the reason."""
    data = _load_json(raw, "pointer")
    _require(isinstance(data, dict), "pointer is not a JSON object")
    generation = data.get("generation")
    previous = data.get("previous")
    _require(_is_int(generation) and generation > 0, f"pointer generation {generation!r} is not a positive integer")
    _require(
        previous is None or (_is_int(previous) and 0 < previous < generation),
        f"pointer previous {previous!r} is not null or an integer below the generation",
    )
    return Pointer(generation=generation, previous=previous)


def _decode_time(value: object, field: str) -> datetime:
    try:
        return parse_time(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SnapshotInvalidError(f"{field} {str(value)[:40]!r} is not an ISO 8601 UTC timestamp") from None


_TEXT_FIELDS = ("username", "lastfmUsername", "artist", "album", "track", "url", "image")


def _decode_track(data: object, index: int) -> Track:
    where = f"tracks[{index}]"
    _require(isinstance(data, dict), f"{where} is not an object")
    for field in _TEXT_FIELDS:
        _require(isinstance(data.get(field), str), f"{where}.{field} is not a string")
        _require(not _SURROGATES.search(data[field]), f"{where}.{field} is not valid Unicode (a lone surrogate)")
    # The warm job stores only sanitised links; anything else was not written by it.
    _require(data["url"] == safe_page_url(data["url"]), f"{where}.url is not an https link on Last.fm")
    _require(data["image"] == safe_image_url(data["image"]), f"{where}.image is not an https image on Last.fm")
    _require(data["username"] != "" and data["lastfmUsername"] != "", f"{where} has an empty username")
    _require(isinstance(data.get("nowPlaying"), bool), f"{where}.nowPlaying is not a boolean")
    played = data.get("playedAt")
    played_at = None if played is None else _decode_time(played, f"{where}.playedAt")
    _require(data["nowPlaying"] or played_at is not None, f"{where} has neither nowPlaying nor playedAt")
    return Track(
        username=data["username"],
        lastfm_username=data["lastfmUsername"],
        artist=data["artist"],
        album=data["album"],
        track=data["track"],
        url=data["url"],
        image=data["image"],
        played_at=played_at,
        now_playing=data["nowPlaying"],
        fetched_at=_decode_time(data.get("fetchedAt"), f"{where}.fetchedAt"),
    )


def decode_snapshot(raw: object, expected_generation: int) -> Snapshot:
    """Decode and validate a snapshot stored under expected_generation's key.

    Raise SnapshotInvalidError naming the first problem: version, generation,
    or the type of a field.
    """
    data = _load_json(raw, "snapshot")
    _require(isinstance(data, dict), "snapshot is not a JSON object")
    version = data.get("version")
    _require(version == SCHEMA_VERSION and _is_int(version), f"version {version!r} is not {SCHEMA_VERSION}")
    generation = data.get("generation")
    _require(
        _is_int(generation) and generation == expected_generation,
        f"generation {generation!r} does not match the key's {expected_generation}",
    )
    tracks = data.get("tracks")
    _require(isinstance(tracks, list), "tracks is not a list")
    stats = data.get("stats", {})
    _require(
        isinstance(stats, dict)
        and all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in stats.values()),
        "stats is not an object of numbers",
    )
    return Snapshot(
        generation=generation,
        last_updated=_decode_time(data.get("lastUpdated"), "lastUpdated"),
        tracks=tuple(_decode_track(track, index) for index, track in enumerate(tracks)),
        stats=dict(stats),
        version=version,
    )

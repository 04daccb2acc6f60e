"""The Last.fm client: fetch a member's most recent track with user.getrecenttracks.

It owns the request, retries, rate limiting and parsing of every response
shape Last.fm really sends, and returns snapshot Track values or raises a
LastfmError subclass. It must never put the API key in a log line or an
exception message, never let a parse problem escape as anything but
LastfmTransientError, and never touch memcached, the database or Flask.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC
from datetime import datetime
from datetime import timedelta

import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.exceptions

from app.core.snapshot import Track
from app.core.snapshot import clean_text
from app.core.snapshot import safe_image_url
from app.core.snapshot import safe_page_url
from app.warm.throttle import RateLimiter

# Named as in every log line (logger=app.lastfm), whatever the module's place in the package.
logger = logging.getLogger("app.lastfm")

METHOD = "user.getrecenttracks"
USER_AGENT = "whats-listening/1.0 (community site warm job; one user.getrecenttracks per member every 5 minutes)"

# Last.fm error codes (https://www.last.fm/api/errorcodes and the method's page).
ERROR_USER_NOT_FOUND = 6  # "Invalid parameters", which for this method means no such user
ERROR_OPERATION_FAILED = 8
ERROR_INVALID_API_KEY = 10
ERROR_SERVICE_OFFLINE = 11
ERROR_TEMPORARILY_UNAVAILABLE = 16
ERROR_LOGIN_REQUIRED = 17
ERROR_SUSPENDED_API_KEY = 26
ERROR_RATE_LIMIT_EXCEEDED = 29

PERMANENT_ERRORS = {ERROR_USER_NOT_FOUND: "not_found", ERROR_LOGIN_REQUIRED: "private"}
FATAL_ERRORS = frozenset({ERROR_INVALID_API_KEY, ERROR_SUSPENDED_API_KEY})
RETRYABLE_ERRORS = frozenset(
    {ERROR_OPERATION_FAILED, ERROR_SERVICE_OFFLINE, ERROR_TEMPORARILY_UNAVAILABLE, ERROR_RATE_LIMIT_EXCEEDED}
)

MAX_RETRY_AFTER_S = 60.0
MAX_MESSAGE_CHARS = 160
CHUNK_BYTES = 64 * 1024
# The whole of one request (connect, headers, body) may take at most this long,
# however slowly Last.fm sends it: the read time-out alone restarts with every byte.
EXCHANGE_TIMEOUT_S = 15.0
# A playedAt further ahead of the run's clock than this is a lie (or a broken
# clock): such a track would sort above every real listen and keep its member
# "active" in the schedule for ever.
MAX_FUTURE_PLAYED_AT = timedelta(minutes=5)

# The grey star Last.fm serves when it has no picture; showing it is worse than none.
PLACEHOLDER_IMAGE_ID = "2a96cbd8b46e442fc41c2b86b821562f"
IMAGE_SIZE_RANK = {"small": 1, "medium": 2, "large": 3, "extralarge": 4, "mega": 5}


class RequestCount:
    """A thread-safe count of the requests this process sent to Last.fm (retries included)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    def add(self) -> None:
        with self._lock:
            self._count += 1

    @property
    def value(self) -> int:
        return self._count


# Per process, so the warm job's metrics (app.warm_metrics) can report a
# run's calls without the run having to carry them.
REQUESTS_SENT = RequestCount()

_API_KEY_IN_TEXT = re.compile(r"(api_key=)[^&\s'\"]*", re.IGNORECASE)
_UTS_PATTERN = re.compile(r"^[0-9]{1,12}$")


class LastfmError(Exception):
    """Base of every error the Last.fm client raises."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class LastfmPermanentError(LastfmError):
    """Raised when the member is gone for good this run: "not_found" (error 6) or "private" (error 17)."""

    def __init__(self, message: str, *, reason: str, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message, status=status, code=code)
        self.reason = reason


class LastfmTransientError(LastfmError):
    """Raised when this fetch failed for a reason that may pass: keep the member's last known track and try later."""

    def __init__(
        self, message: str, *, retry_after_s: float | None = None, status: int | None = None, code: int | None = None
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after_s = retry_after_s


class LastfmFatalError(LastfmError):
    """Raised when the API key is invalid or suspended, so the whole run must stop (outcome config, exit 2)."""


class _MalformedError(Exception):
    """Raised inside the parser for any response shape it cannot trust; never leaves this module."""


@dataclasses.dataclass
class _Failure:
    """A failed attempt: the error to raise, and how the retry loop should treat it."""

    error: LastfmError
    retryable: bool = False
    rate_limited: bool = False
    retry_after_s: float | None = None


class LastfmClient:
    """Fetch members' most recent tracks from Last.fm over an injected requests session."""

    def __init__(
        self,
        session: requests.Session,
        base_url: str,
        api_key: str | None,
        *,
        connect_timeout_s: float = 3.05,
        read_timeout_s: float = 10.0,
        max_retries: int = 2,
        backoff_s: float = 0.5,
        max_body_bytes: int = 1_000_000,
        exchange_timeout_s: float = EXCHANGE_TIMEOUT_S,
        throttle: RateLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"max_retries {max_retries!r} is negative; expected 0 or more")
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes {max_body_bytes!r} is not positive")
        self._session = session
        self._base_url = base_url
        self._api_key = api_key or None
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._max_body_bytes = max_body_bytes
        self._exchange_timeout_s = exchange_timeout_s
        self._throttle = throttle
        self._clock = clock
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"<LastfmClient {self._base_url!r} key={'set' if self._api_key else 'none'}>"

    def fetch_recent_track(
        self, username: str, lastfm_username: str, *, now: datetime, deadline: float | None = None
    ) -> Track | None:
        """Return the member's most recent track, now playing preferred; None when they have no scrobbles.

        :param username: the member's name on this site, copied into the Track.
        :param lastfm_username: the Last.fm account asked for.
        :param now: when this fetch happens (an aware UTC datetime), the Track's fetched_at.
        :param deadline: a clock() value after which no request, read or retry starts.

        Raise LastfmPermanentError (user not found, private), LastfmFatalError
        (invalid or suspended API key) or LastfmTransientError (anything else,
        after up to max_retries retries for the kinds of failure that may pass).
        """
        attempt = 0
        while True:
            outcome = self._attempt(lastfm_username, deadline)
            if not isinstance(outcome, _Failure):
                return self._build_track(outcome, username, lastfm_username, now)
            delay = self._backoff_s * 2**attempt
            if outcome.retry_after_s is not None:
                delay = max(delay, outcome.retry_after_s)
            if outcome.rate_limited and self._throttle is not None:
                # Every worker shares the throttle, so all of them back off, even when this member gives up.
                self._throttle.pause_until(self._clock() + delay)
            if not outcome.retryable or attempt >= self._max_retries:
                raise outcome.error
            if deadline is not None and self._clock() + delay >= deadline:
                raise outcome.error
            attempt += 1
            logger.warning("%s; retry %d of %d in %.1f s", outcome.error, attempt, self._max_retries, delay)
            self._sleep(delay)

    # -- one attempt ------------------------------------------------------------

    def _attempt(self, lastfm_username: str, deadline: float | None) -> dict | _Failure:
        """Make one request; return the recenttracks object or a _Failure, raise permanent and fatal errors."""
        if self._throttle is not None and not self._throttle.acquire(deadline):
            return self._deadline_failure(lastfm_username, "no request slot under the rate limit before the deadline")
        timeout = self._timeout(deadline)
        if timeout is None:
            return self._deadline_failure(lastfm_username, "the deadline passed before the request")
        received = self._receive(lastfm_username, timeout, deadline)
        if isinstance(received, _Failure):
            return received
        status, retry_after_s, body = received
        logger.debug("Last.fm %s user=%r status=%d bytes=%d", METHOD, lastfm_username, status, len(body))
        return self._interpret(lastfm_username, status, retry_after_s, body)

    def _params(self, lastfm_username: str) -> dict[str, str]:
        """Build the query string: the one place the API key goes into a request."""
        params = {"method": METHOD, "user": lastfm_username, "limit": "1", "format": "json"}
        if self._api_key is not None:
            params["api_key"] = self._api_key
        return params

    def _timeout(self, deadline: float | None) -> tuple[float, float] | None:
        if deadline is None:
            return (self._connect_timeout_s, self._read_timeout_s)
        remaining = deadline - self._clock()
        if remaining <= 0:
            return None
        return (min(self._connect_timeout_s, remaining), min(self._read_timeout_s, remaining))

    def _receive(
        self, lastfm_username: str, timeout: tuple[float, float], deadline: float | None
    ) -> tuple[int, float | None, bytes] | _Failure:
        """Send the request and read at most max_body_bytes of the body, before the deadline.

        requests exceptions carry the full URL, API key included, so only
        their class name is kept and they are never chained.
        """
        failure_kind: str | None = None
        response = None
        limit_s = self._exchange_timeout_s
        if deadline is not None:
            limit_s = min(limit_s, max(0.0, deadline - self._clock()))
        watch = ExchangeWatch(limit_s)
        try:
            with watch:
                REQUESTS_SENT.add()
                response = self._session.get(
                    self._base_url,
                    params=self._params(lastfm_username),
                    headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
                    timeout=timeout,
                    stream=True,
                    # A redirect would carry the API key in its query string to wherever it points.
                    allow_redirects=False,
                )
                status = response.status_code
                retry_after_s = _parse_retry_after(response.headers.get("Retry-After"))
                declared = _parse_length(response.headers.get("Content-Length"))
                if declared is not None and declared > self._max_body_bytes:
                    return self._body_too_big(lastfm_username, status)
                chunks = []
                size = 0
                for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
                    size += len(chunk)
                    if size > self._max_body_bytes:
                        return self._body_too_big(lastfm_username, status)
                    chunks.append(chunk)
                    if deadline is not None and self._clock() >= deadline:
                        return self._deadline_failure(lastfm_username, "the deadline passed while reading the response")
        except requests.Timeout as error:
            failure_kind = f"timed out ({type(error).__name__})"
        except (requests.RequestException, OSError, urllib3.exceptions.HTTPError) as error:
            failure_kind = f"connection failed ({type(error).__name__})"
        finally:
            if response is not None:
                response.close()
        if watch.expired:
            # The watch cut the socket: whatever the read returned is incomplete.
            failure_kind = f"timed out (the whole exchange took over {limit_s:.1f} s)"
        if failure_kind is not None:
            # Raised outside the except block so the requests exception is not even the __context__.
            return _Failure(self._transient(lastfm_username, failure_kind), retryable=True)
        return status, retry_after_s, b"".join(chunks)

    def _interpret(
        self, lastfm_username: str, status: int, retry_after_s: float | None, body: bytes
    ) -> dict | _Failure:
        """Classify a complete response: a Last.fm error, an HTTP error, or the recenttracks object."""
        data = _decode_json(body)
        if isinstance(data, dict) and "error" in data:
            return self._classify_error(lastfm_username, status, retry_after_s, data)
        if status == 429 or status >= 500:
            error = self._transient(lastfm_username, f"HTTP {status}", status=status, retry_after_s=retry_after_s)
            return _Failure(error, retryable=True, rate_limited=status == 429, retry_after_s=retry_after_s)
        if status != 200:
            return _Failure(self._transient(lastfm_username, f"HTTP {status} without a Last.fm error", status=status))
        if data is _NOT_JSON or data is _NEVER_JSON:
            looks_html = body.lstrip()[:1] == b"<"
            what = "an HTML page instead of JSON" if looks_html else "a body that is not complete JSON"
            if data is _NEVER_JSON and not looks_html:
                what = "a body that can never parse (too deep, a number too long, or not UTF-8)"
            # A maintenance page or a cut-off body may pass; a body that can never parse will not.
            retryable = looks_html or data is _NOT_JSON
            return _Failure(
                self._transient(lastfm_username, f"HTTP {status}, {what}", status=status), retryable=retryable
            )
        recent = data.get("recenttracks") if isinstance(data, dict) else None
        if not isinstance(recent, dict):
            what = f"JSON {type(data).__name__} without a recenttracks object"
            return _Failure(self._transient(lastfm_username, f"HTTP {status}, {what}", status=status), retryable=True)
        return recent

    def _classify_error(self, lastfm_username: str, status: int, retry_after_s: float | None, data: dict) -> _Failure:
        """Turn a {"error": N, "message": ...} body into the exception it means; raise the ones never retried."""
        code = _parse_code(data.get("error"))
        message = clean_text(data.get("message"), MAX_MESSAGE_CHARS)
        detail = f"HTTP {status}, Last.fm error {code if code is not None else '?'} ({message or 'no message'})"
        # A 5xx is Last.fm's own failure, whatever its body claims; only believe error codes on other statuses.
        if status < 500 and code in FATAL_ERRORS:
            raise LastfmFatalError(self._describe(lastfm_username, detail), status=status, code=code)
        if status < 500 and code in PERMANENT_ERRORS:
            raise LastfmPermanentError(
                self._describe(lastfm_username, detail), reason=PERMANENT_ERRORS[code], status=status, code=code
            )
        rate_limited = code == ERROR_RATE_LIMIT_EXCEEDED or status == 429
        retryable = code in RETRYABLE_ERRORS or status == 429 or status >= 500
        error = self._transient(lastfm_username, detail, status=status, code=code, retry_after_s=retry_after_s)
        return _Failure(error, retryable=retryable, rate_limited=rate_limited, retry_after_s=retry_after_s)

    # -- parsing -----------------------------------------------------------------

    def _build_track(self, recent: dict, username: str, lastfm_username: str, now: datetime) -> Track | None:
        """Turn the recenttracks object into a Track, or None when the member has no scrobbles."""
        try:
            return _parse_recent(recent, username, lastfm_username, now)
        except _MalformedError as error:
            reason = str(error)
            logger.warning("%s", self._describe(lastfm_username, f"malformed response: {reason}"))
        except (TypeError, KeyError, AttributeError, ValueError, IndexError, OverflowError) as error:
            # The parser checks every type itself; reaching this is a bug, still not a crash of the run.
            reason = f"unexpected {type(error).__name__} while parsing"
        raise self._transient(lastfm_username, f"malformed response: {reason}", status=200)

    # -- errors ------------------------------------------------------------------

    def _describe(self, lastfm_username: str, detail: str) -> str:
        name = clean_text(lastfm_username, 64)
        return self._redact(f"Last.fm {METHOD} for {name!r}: {detail}")

    def _redact(self, text: str) -> str:
        """Remove the API key from text, whatever put it there."""
        if self._api_key:
            text = text.replace(self._api_key, "[redacted]")
        return _API_KEY_IN_TEXT.sub(r"\1[redacted]", text)

    def _transient(
        self,
        lastfm_username: str,
        detail: str,
        *,
        status: int | None = None,
        code: int | None = None,
        retry_after_s: float | None = None,
    ) -> LastfmTransientError:
        return LastfmTransientError(
            self._describe(lastfm_username, detail), retry_after_s=retry_after_s, status=status, code=code
        )

    def _deadline_failure(self, lastfm_username: str, detail: str) -> _Failure:
        return _Failure(self._transient(lastfm_username, f"deadline: {detail}"))

    def _body_too_big(self, lastfm_username: str, status: int) -> _Failure:
        detail = f"HTTP {status}, response body over {self._max_body_bytes} bytes"
        return _Failure(self._transient(lastfm_username, detail, status=status))


# -- a wall-clock limit for the whole exchange ------------------------------------------

_watched = threading.local()


class ExchangeWatch:
    """A wall-clock limit on one request: when it runs out, the request's socket is shut down.

    A socket time-out bounds each read, not their sum, so a server sending a
    byte a second (headers or body) would hold a request for as long as it
    likes. While a watch is active on a thread, the Last.fm connections made
    by LastfmAdapter on that thread register their socket with it; at the
    limit a timer shuts that socket down, which wakes the blocked read at once.
    """

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.expired = False
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._timer = threading.Timer(max(0.0, limit_s), self._expire)
        # A daemon: a timer left behind never holds the process at exit.
        self._timer.daemon = True

    def __enter__(self) -> ExchangeWatch:
        _watched.watch = self
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        _watched.watch = None
        with self._lock:
            self._socket = None

    def watch(self, sock: socket.socket | None) -> None:
        """Cut sock when the limit runs out (at once if it already has)."""
        with self._lock:
            self._socket = sock
            if self.expired:
                _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            _shut(self._socket)


def _shut(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def _watch_current(sock: socket.socket | None) -> None:
    watch = getattr(_watched, "watch", None)
    if watch is not None:
        watch.watch(sock)


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    def getresponse(self, *args, **kwargs):
        _watch_current(self.sock)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def getresponse(self, *args, **kwargs):
        _watch_current(self.sock)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPConnectionPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSConnectionPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class LastfmAdapter(requests.adapters.HTTPAdapter):
    """A requests adapter whose connections an ExchangeWatch can cut (mount it for the Last.fm URL)."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPConnectionPool,
            "https": _WatchedHTTPSConnectionPool,
        }


# -- pure helpers ----------------------------------------------------------------

_NOT_JSON = object()
_NEVER_JSON = object()


def _decode_json(body: bytes) -> object:
    """Return the decoded JSON value of body, _NOT_JSON (malformed, maybe cut off) or _NEVER_JSON.

    _NEVER_JSON is a body no retry can fix: nested too deep for the decoder,
    an integer past Python's digit limit, bytes that are not UTF-8.
    """
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return _NOT_JSON
    except (ValueError, RecursionError):
        # UnicodeDecodeError, the integer digit limit, and deep nesting.
        return _NEVER_JSON


def _parse_code(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 6:
        return int(value.strip())
    return None


def _parse_retry_after(value: str | None) -> float | None:
    """Return Retry-After in seconds, capped at MAX_RETRY_AFTER_S; None when absent or an HTTP date."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER_S)


def _parse_length(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise _MalformedError(reason)


def _parse_recent(recent: dict, username: str, lastfm_username: str, now: datetime) -> Track | None:
    """Pick the now-playing item, else the first, from the recenttracks object and build its Track."""
    attributes = recent.get("@attr", recent)
    _require(isinstance(attributes, dict), "recenttracks.@attr is not an object")
    # The 2014 empty page has no @attr: its attributes sit in recenttracks itself.
    answered_for = attributes.get("user")
    if answered_for is not None:
        _require(isinstance(answered_for, str), "recenttracks user is not a string")
        _require(
            answered_for.casefold() == lastfm_username.casefold(),
            f"the page is for user {clean_text(answered_for, 64)!r}, not the member asked for",
        )
    items = recent.get("track")
    if isinstance(items, dict):
        items = [items]
    if items is None or items == []:
        total = _parse_code(attributes.get("total"))
        # An empty page that still counts scrobbles is a glitch, not "nothing played": keep the old track.
        _require(not total, f"no track although the page counts {total} scrobbles")
        return None
    _require(isinstance(items, list), f"recenttracks.track is a {type(items).__name__}, not a list or an object")
    item = next((entry for entry in items if _is_now_playing(entry)), items[0])
    _require(isinstance(item, dict), f"the track item is a {type(item).__name__}, not an object")
    return _parse_item(item, username, lastfm_username, now)


def _is_now_playing(item: object) -> bool:
    if not isinstance(item, dict):
        return False
    attributes = item.get("@attr")
    return isinstance(attributes, dict) and attributes.get("nowplaying") in ("true", True)


def _parse_item(item: dict, username: str, lastfm_username: str, now: datetime) -> Track:
    artist_object = item.get("artist")
    _require(isinstance(artist_object, dict), "the track's artist is not an object")
    # Plain format: {"#text": name}; extended=1: {"name": ..., "url": ..., "image": [...]}.
    artist = clean_text(_optional_text(artist_object, "name") or _optional_text(artist_object, "#text"))
    _require(artist != "", "the track has no artist name")
    title = clean_text(_optional_text(item, "name"))
    _require(title != "", "the track has no name")
    album_object = item.get("album")
    album = ""
    if album_object is not None:
        _require(isinstance(album_object, dict), "the track's album is not an object")
        album = clean_text(_optional_text(album_object, "#text"))
    now_playing = _is_now_playing(item)
    played_at = None if now_playing else _parse_date(item.get("date"))
    _require(
        played_at is None or played_at <= now + MAX_FUTURE_PLAYED_AT,
        f"the track's playedAt {played_at and played_at.isoformat()} is ahead of the run's clock ({now.isoformat()})",
    )
    image = _pick_image(item.get("image")) or _pick_image(artist_object.get("image"))
    return Track(
        username=username,
        lastfm_username=lastfm_username,
        artist=artist,
        album=album,
        track=title,
        url=safe_page_url(_optional_text(item, "url")),
        image=image,
        played_at=played_at,
        now_playing=now_playing,
        fetched_at=now,
    )


def _optional_text(mapping: dict, key: str) -> str:
    value = mapping.get(key)
    if value is None:
        return ""
    _require(isinstance(value, str), f"{key} is a {type(value).__name__}, not a string")
    return value


def _parse_date(value: object) -> datetime:
    _require(isinstance(value, dict), "a track that is not playing has no date")
    uts = value.get("uts")
    if isinstance(uts, str) and _UTS_PATTERN.fullmatch(uts):
        seconds = int(uts)
    elif isinstance(uts, int) and not isinstance(uts, bool):
        seconds = uts
    else:
        raise _MalformedError("the track's date has no valid uts")
    _require(0 < seconds < 253402300800, f"the track's uts {seconds} is out of range")
    return datetime.fromtimestamp(seconds, tz=UTC)


def _pick_image(images: object) -> str:
    """Return the largest safe, non-placeholder image URL of a Last.fm image list, or ""."""
    if images is None or images == "":
        return ""
    _require(isinstance(images, list), f"image is a {type(images).__name__}, not a list")
    best = ""
    best_rank = -1
    for entry in images:
        _require(isinstance(entry, dict), "an image entry is not an object")
        raw = _optional_text(entry, "#text")
        size = entry.get("size")
        rank = IMAGE_SIZE_RANK.get(size, 0) if isinstance(size, str) else 0
        url = safe_image_url(raw) if PLACEHOLDER_IMAGE_ID not in raw else ""
        if url and rank > best_rank:
            best, best_rank = url, rank
    return best

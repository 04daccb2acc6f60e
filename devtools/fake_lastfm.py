"""A fake Last.fm ``user.getrecenttracks`` server for dev, demos and tests; the web app must never import it.

It serves deterministic data that changes over time, the real API's quirks and,
through a control API under ``/_fake/``, the failures the warm job must survive.
Run from the checkout's top directory: ``python -m devtools.fake_lastfm``. It
lives outside the ``app`` package, so it is never installed with it; it takes
the method name, the error codes and the placeholder image from the real
client (app.lastfm), so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import logging
import signal
import sys
import threading
import time
import urllib.parse

from app.warm.lastfm import ERROR_INVALID_API_KEY
from app.warm.lastfm import ERROR_LOGIN_REQUIRED
from app.warm.lastfm import ERROR_OPERATION_FAILED
from app.warm.lastfm import ERROR_RATE_LIMIT_EXCEEDED
from app.warm.lastfm import ERROR_SERVICE_OFFLINE
from app.warm.lastfm import ERROR_SUSPENDED_API_KEY
from app.warm.lastfm import ERROR_TEMPORARILY_UNAVAILABLE
from app.warm.lastfm import ERROR_USER_NOT_FOUND
from app.warm.lastfm import METHOD
from app.warm.lastfm import PLACEHOLDER_IMAGE_ID

# Not __name__: that is "__main__" when the module is run with -m.
logger = logging.getLogger("devtools.fake_lastfm")

API_PATHS = ("/2.0/", "/2.0", "/")
CONTROL_PREFIX = "/_fake/"
JSON_TYPE = "application/json; charset=utf-8"
HTML_TYPE = "text/html; charset=utf-8"
IMAGE_BASE = "https://lastfm.freetls.fastly.net/i/u"
IMAGE_SIZES = (("small", "34s"), ("medium", "64s"), ("large", "174s"), ("extralarge", "300x300"))
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
DEFAULT_HUGE_BYTES = 5_000_000
DEFAULT_SLOW_S = 2.0
DEFAULT_HANG_S = 60.0
DEFAULT_DRIP_S = 1.0
MAX_DELAY_S = 600.0
MAINTENANCE_PAGE = "<!DOCTYPE html><html><head><title>Last.fm</title></head><body>Back soon.</body></html>"

# Error code -> (HTTP status, message), as Last.fm answers them.
ERROR_INVALID_METHOD = 3  # never sent by the real client, which asks for METHOD only
ERRORS = {
    ERROR_INVALID_METHOD: (400, "Invalid Method - No method with that name in this package"),
    ERROR_USER_NOT_FOUND: (404, "User not found"),
    ERROR_OPERATION_FAILED: (200, "Operation failed - Most likely the backend service failed. Please try again."),
    ERROR_INVALID_API_KEY: (403, "Invalid API key - You must be granted a valid key by last.fm"),
    ERROR_SERVICE_OFFLINE: (200, "Service Offline - This service is temporarily offline. Try again later."),
    ERROR_TEMPORARILY_UNAVAILABLE: (200, "There was a temporary error processing your request. Please try again"),
    ERROR_LOGIN_REQUIRED: (403, "Login: User required to be logged in"),
    ERROR_SUSPENDED_API_KEY: (
        403,
        "Suspended API key - Access for your account has been suspended, please contact Last.fm",
    ),
    ERROR_RATE_LIMIT_EXCEEDED: (200, "Rate Limit Exceeded - Your IP has made too many requests in a short period"),
}

MODES = frozenset(
    "normal now_playing not_playing track empty legacy legacy_empty starry"
    " error http html truncated huge wrong_user slow hang drip drip_headers".split()
)

# Built-in quirk users, so a demo shows them without any control call.
QUIRK_USERS = {
    "ghost": {"mode": "error", "code": ERROR_USER_NOT_FOUND},
    "hidden": {"mode": "error", "code": ERROR_LOGIN_REQUIRED},
    "quiet": {"mode": "empty"},
    "legacy": {"mode": "legacy"},
    "starry": {"mode": "starry"},
}

# (artist, album, track); an empty album is a quirk Last.fm really has.
CATALOGUE = (
    ("Sigur Rós", "Ágætis byrjun", "Svefn-g-englar"),
    ("Björk", "Homogenic", "Jóga"),
    ("Motörhead", "Ace of Spades", "Ace of Spades"),
    ("Ólafur Arnalds", "re:member", "re:member"),
    ("Radiohead", "In Rainbows", "Weird Fishes/Arpeggi"),
    ("Daft Punk", "Discovery", "One More Time"),
    ("Kate Bush", "Hounds of Love", "Running Up That Hill (A Deal with God)"),
    ("Massive Attack", "Mezzanine", "Teardrop"),
    ("Portishead", "Dummy", "Roads"),
    ("Beyoncé", "RENAISSANCE", "CUFF IT"),
    ("Mogwai", "Young Team", "Mogwai Fear Satan"),
    ("Boards of Canada", "Music Has the Right to Children", "Roygbiv"),
    ("Aphex Twin", "Selected Ambient Works 85-92", "Xtal"),
    ("The Cure", "Disintegration", "Pictures of You"),
    ("Joy Division", "Unknown Pleasures", "Disorder"),
    ("Fleetwood Mac", "Rumours", "Dreams"),
    ("Kendrick Lamar", "To Pimp a Butterfly", "Alright"),
    ("Caribou", "Swim", "Odessa"),
    ("Four Tet", "There Is Love in You", "Angel Echoes"),
    ("Röyksopp", "Melody A.M.", "Eple"),
    ("Sébastien Tellier", "Sexuality", "Divine"),
    ("Nils Frahm", "Spaces", "Says"),
    ("Khruangbin", "Con Todo El Mundo", "María También"),
    ("Hozier", "", "Take Me to Church"),
    ("ROSALÍA", "El Mal Querer", "MALAMENTE - Cap.1: Augurio"),
    ("Mötley Crüe", "Dr. Feelgood", "Kickstart My Heart"),
    ("Angèle", "Brol", "Balance ton quoi"),
    ("Tinariwen", "Amassakoul", "Chatma"),
    ("坂本龍一", "async", "andata"),
    ("Fever Ray", "Fever Ray", "If I Had a Heart"),
    ("The National", "Boxer", "Fake Empire"),
    ("Simon & Garfunkel", "Bookends", "America"),
    ("Slowdive", "Souvlaki", "Alison"),
    ("Bonobo", "Black Sands", "Kiara"),
    ("Arvo Pärt", "Alina", "Spiegel im Spiegel"),
    ("Nick Drake", "Pink Moon", "Pink Moon"),
    ("Stereolab", "", "Miss Modular"),
    ("AC/DC", "Back in Black", "You Shook Me All Night Long"),
    ("Sufjan Stevens", "Illinois", "Chicago"),
    ("Guns N' Roses", "Appetite for Destruction", "Sweet Child O' Mine"),
)


def _digest(*parts: object) -> bytes:
    """Hash the parts joined by ':' (e.g. seed, user, window) into 32 bytes."""
    return hashlib.sha256(":".join(str(part) for part in parts).encode("utf-8")).digest()


def _image_urls(image_id: str) -> list[str]:
    return [f"{IMAGE_BASE}/{path}/{image_id}.png" for _, path in IMAGE_SIZES]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def track_item(
    artist: object, album: object, name: object, url: object, images: list, now_playing: bool, uts: object
) -> dict:
    """Build one track in the 2024 wire shape, values verbatim; ``uts`` None means no date."""
    item = {
        "artist": {"mbid": "", "#text": artist},
        "streamable": "0",
        "image": [{"size": size, "#text": image} for (size, _), image in zip(IMAGE_SIZES, images, strict=False)],
        "mbid": "",
        "album": {"mbid": "", "#text": album},
        "name": name,
        "url": url,
    }
    if now_playing:
        item["@attr"] = {"nowplaying": "true"}
    elif _is_number(uts):
        tm = time.gmtime(int(uts))
        text = f"{tm.tm_mday:02d} {MONTHS[tm.tm_mon - 1]} {tm.tm_year}, {tm.tm_hour:02d}:{tm.tm_min:02d}"
        item["date"] = {"uts": str(int(uts)), "#text": text}
    elif uts is not None:
        item["date"] = {"uts": uts, "#text": ""}
    return item


def _catalogue_item(index: int, now_playing: bool, uts: int | None) -> dict:
    artist, album, name = CATALOGUE[index % len(CATALOGUE)]
    quote = urllib.parse.quote_plus
    url = f"https://www.last.fm/music/{quote(artist, safe='')}/_/{quote(name, safe='')}"
    art = _digest("art", artist, album, name)
    # About one track in five has no artwork at all: every image "#text" is "".
    images = [""] * 4 if art[0] % 5 == 0 else _image_urls(art.hex()[:32])
    return track_item(artist, album, name, url, images, now_playing, uts)


def generate_tracks(
    seed: int, user: str, now: float, limit: int, playing: bool | None = None
) -> tuple[list[dict], int]:
    """Return (tracks, total scrobbles) for a user at time ``now``, deterministically.

    Each user has a window of 2-10 minutes; the last scrobble and whether the
    user is now playing (about a third of the windows) change once per window.
    ``playing`` forces the now-playing item on or off.
    """
    key = user.lower()
    profile = _digest(seed, key)
    window_s = 120 + int.from_bytes(profile[0:2], "big") % 481
    phase_s = int.from_bytes(profile[2:4], "big") % window_s
    # One member in ten last listened days ago, one in ten hours ago, the others minutes ago.
    lags_s = (86400 * (1 + profile[5] % 4), 3600 * (1 + profile[5] % 6), 60 * (profile[5] % 20))
    lag_s = lags_s[min(profile[4] % 10, 2)]
    window = int((now + phase_s) // window_s)
    current = _digest(seed, key, window)
    if playing is None:
        playing = current[2] % 3 == 0
    tracks = [_catalogue_item(current[3], True, None)] if playing else []
    for back in range(limit):
        # Scrobble k is the one of window w-k, so times descend and never pass `now`.
        earlier = window - back
        scrobble = _digest(seed, key, earlier)
        uts = earlier * window_s - phase_s - lag_s - scrobble[1] % (window_s // 2)
        tracks.append(_catalogue_item(scrobble[0], False, uts))
    total = 500 + int.from_bytes(profile[6:9], "big") % 90000 + max(0, window - 1_700_000_000 // window_s)
    return tracks, total


def _attr(user: object, total: int, limit: int, page: str = "1") -> dict:
    pages = -(-total // limit)
    return {"user": user, "totalPages": str(pages), "page": page, "perPage": str(limit), "total": str(total)}


def recent_payload(spec: dict, user: str, limit: int, now: float, seed: int) -> dict:
    """Build the JSON document of a mode that answers with data."""
    mode = spec["mode"]
    if mode == "legacy_empty":
        # The 2014 shape of a user without scrobbles: no "track" and no "@attr".
        return {
            "recenttracks": {
                "#text": "\n",
                "user": user,
                "page": "0",
                "perPage": str(limit),
                "totalPages": "0",
                "total": "0",
            }
        }
    if mode == "empty":
        return {"recenttracks": {"track": [], "@attr": _attr(user, 0, limit)}}
    if mode == "track":
        given = spec["track"]
        fields = ("artist", "album", "name", "url", "image")
        artist, album, name, url, image = (given.get(field, "") for field in fields)
        item = track_item(
            artist, album, name, url, [image] * 4, bool(given.get("now_playing")), given.get("uts", int(now) - 60)
        )
        return {"recenttracks": {"track": [item], "@attr": _attr(user, 1, limit)}}
    playing = {"now_playing": True, "not_playing": False, "legacy": False}.get(mode)
    tracks, total = generate_tracks(seed, user, now, limit, playing)
    if mode == "starry":
        for item in tracks:
            for image, url in zip(item["image"], _image_urls(PLACEHOLDER_IMAGE_ID), strict=False):
                image["#text"] = url
    if mode == "legacy" and limit == 1:
        # The 2014 API gave a single object, not a list, when one track came back.
        return {"recenttracks": {"track": tracks[0], "@attr": _attr(user, total, limit, page="0")}}
    owner = spec.get("other", "someone-else") if mode == "wrong_user" else user
    return {"recenttracks": {"track": tracks, "@attr": _attr(owner, total, limit)}}


def dumps_lastfm(document: dict) -> bytes:
    """Serialise like Last.fm: compact, UTF-8 and slashes escaped as '\\/'."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).replace("/", "\\/").encode("utf-8")


def parse_mode(body: object) -> dict:
    """Validate a control body into a mode spec; raise ValueError with a one-line reason."""
    if not isinstance(body, dict) or body.get("mode") not in MODES:
        raise ValueError(f'expected {{"mode": M}}, M one of {", ".join(sorted(MODES))}; got {body!r}')
    for field in ("times", "code", "status", "retry_after", "bytes"):
        value = body.get(field)
        if value is not None and (type(value) is not int or value < (1 if field == "times" else 0)):
            expected = "a positive" if field == "times" else "a non-negative"
            raise ValueError(f"{field!r} is {value!r}; expected {expected} integer")
    delay_s = body.get("delay_s")
    if delay_s is not None and not (_is_number(delay_s) and 0 <= delay_s <= MAX_DELAY_S):
        raise ValueError(f"'delay_s' is {delay_s!r}; expected seconds from 0 to {MAX_DELAY_S:g}")
    if body["mode"] == "error" and body.get("code") is None:
        raise ValueError("mode 'error' needs an integer 'code'")
    if not 100 <= body.get("status", 0 if body["mode"] == "http" else 200) <= 599:
        raise ValueError(f"'status' is {body.get('status')!r}; expected an HTTP status from 100 to 599")
    if body["mode"] == "track" and not isinstance(body.get("track"), dict):
        raise ValueError("mode 'track' needs a 'track' object")
    return dict(body)


class FakeState:
    """Modes, clock, latency and counters shared by the request threads."""

    def __init__(self, seed: int, latency_s: float = 0.0) -> None:
        self.seed, self.latency_s, self.lock = seed, latency_s, threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            # Key: lower-cased user name, or None for all users. Entry: spec, times left
            # (None: until reset) and the entry to restore when they run out.
            self.modes: dict[str | None, dict] = {}
            self.by_user: dict[str, int] = {}
            self.clock: float | None = None
            self.requests = self.api_keys_seen = 0

    def now(self) -> float:
        return time.time() if self.clock is None else self.clock

    def set_mode(self, key: str | None, spec: dict) -> None:
        """Set the mode of one user (key None: all users); after 'times' requests the old one returns."""
        with self.lock:
            times = spec.get("times")
            if key is None and spec["mode"] == "normal" and times is None:
                self.modes.pop(None, None)
            else:
                previous = self.modes.get(key) if times is not None else None
                self.modes[key] = {"spec": spec, "times": times, "previous": previous}

    def _consume(self, key: str | None) -> dict | None:
        entry = self.modes.get(key)
        if entry is None:
            return None
        if entry["times"] is not None:
            entry["times"] -= 1
            if entry["times"] <= 0:
                self.modes[key] = entry["previous"]
                if entry["previous"] is None:
                    del self.modes[key]
        return entry["spec"]

    def count(self, user: str, has_key: bool) -> None:
        """Count one API request; whether it carried a key is kept, never the key."""
        with self.lock:
            self.requests += 1
            self.api_keys_seen += int(has_key)
            if user:
                self.by_user[user.lower()] = self.by_user.get(user.lower(), 0) + 1

    def resolve(self, user: str) -> dict:
        """Return the mode spec answering a valid request for ``user``, using up one of its 'times'."""
        key = user.lower()
        with self.lock:
            # Per-user modes win over the all-users mode, which wins over the built-in quirk users.
            spec = self._consume(key) or self._consume(None)
        return spec or QUIRK_USERS.get(key) or {"mode": "normal"}

    def stats(self) -> dict:
        with self.lock:
            by_user = dict(self.by_user)
            return {"requests": self.requests, "by_user": by_user, "api_keys_seen": self.api_keys_seen}


class FakeLastfmHandler(http.server.BaseHTTPRequestHandler):
    """Answer the Last.fm API and the /_fake/ control API."""

    server_version = "fake-lastfm/1"

    def log_request(self, code: object = "-", size: object = "-") -> None:
        pass  # the default line holds the request path, and so the api_key: never log it

    def log_error(self, format: str, *args: object) -> None:
        # A malformed request line could hold an api_key too: log the status code only.
        logger.warning("rejected a malformed request: status=%s", args[0] if args else "-")

    @property
    def state(self) -> FakeState:
        return self.server.state  # type: ignore[attr-defined]

    def _send(self, status: int, content_type: str, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_control(self, status: int, document: dict) -> None:
        self._send(status, JSON_TYPE, json.dumps(document).encode("utf-8"))
        logger.info("%s %s status=%d", self.command, urllib.parse.urlsplit(self.path).path, status)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path in API_PATHS:
            self._answer_api(urllib.parse.parse_qs(url.query, keep_blank_values=True))
        elif url.path == CONTROL_PREFIX + "stats":
            self._send_control(200, self.state.stats())
        elif url.path.startswith(CONTROL_PREFIX):
            self._send_control(404, {"error": f"unknown control path GET {url.path}"})
        else:
            self._send(404, HTML_TYPE, b"<html><body><h1>404 Not Found</h1></body></html>")

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        try:
            if not path.startswith(CONTROL_PREFIX):
                raise LookupError(f"unknown control path POST {path}")
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            self._send_control(200, self._control(path[len(CONTROL_PREFIX) :], body))
        except LookupError as error:
            self._send_control(404, {"error": str(error.args[0])})
        except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError included
            self._send_control(400, {"error": f"bad control request: {str(error).splitlines()[0]}"})

    def _control(self, action: str, body: object) -> dict:
        """Apply one control call; raise LookupError (404) or ValueError (400)."""
        if action == "reset":
            self.state.reset()
            return {"ok": True}
        if action == "all" or (action.startswith("users/") and action != "users/"):
            name = None if action == "all" else urllib.parse.unquote(action[len("users/") :])
            spec = parse_mode(body)
            self.state.set_mode(name and name.lower(), spec)
            return {"ok": True, "user": name, "mode": spec}
        if action == "clock":
            now = body.get("now", "missing") if isinstance(body, dict) else body
            if now is not None and not _is_number(now):
                raise ValueError(f'expected {{"now": Unix seconds or null}}; got {body!r}')
            self.state.clock = None if now is None else float(now)
            return {"ok": True, "now": self.state.clock}
        if action == "latency":
            ms = body.get("ms") if isinstance(body, dict) else body
            if not _is_number(ms) or ms < 0:
                raise ValueError(f'expected {{"ms": a non-negative number}}; got {body!r}')
            self.state.latency_s = ms / 1000
            return {"ok": True, "ms": ms}
        raise LookupError(f"unknown control path POST {CONTROL_PREFIX}{action}")

    def _answer_api(self, params: dict[str, list[str]]) -> None:
        names = ("method", "user", "api_key", "limit")
        method, user, api_key, limit = (params.get(name, [""])[0] for name in names)
        self.state.count(user, bool(api_key))
        time.sleep(self.state.latency_s)
        status = self._reply(method.lower(), user, api_key, limit)
        # JSON quoting keeps a user name holding a newline on one log line.
        quoted_user = json.dumps(user, ensure_ascii=False)
        logger.info("GET method=%s user=%s status=%s", json.dumps(method), quoted_user, status)

    def _reply(self, method: str, user: str, api_key: str, limit_text: str) -> int | str:
        """Write the answer to one API request; return its status for the log line."""
        if method != METHOD:
            return self._send_error(ERROR_INVALID_METHOD)
        if api_key in ("invalid", "suspended"):
            return self._send_error(ERROR_INVALID_API_KEY if api_key == "invalid" else ERROR_SUSPENDED_API_KEY)
        if not user:
            return self._send_error(ERROR_USER_NOT_FOUND)
        spec = self.state.resolve(user)
        mode = spec["mode"]
        if mode in ("slow", "hang"):
            time.sleep(spec.get("delay_s", DEFAULT_HANG_S if mode == "hang" else DEFAULT_SLOW_S))
            if mode == "hang":
                self.close_connection = True  # close without a single byte of answer
                return "hang"
        if mode == "error":
            return self._send_error(spec["code"], spec.get("status"), spec.get("message"))
        if mode in ("http", "html"):
            status = spec.get("status", 200)
            reason = self.responses.get(status, ("Error",))[0]
            default = f"<html><body><h1>{status} {reason}</h1></body></html>"
            page = MAINTENANCE_PAGE if mode == "html" else str(spec.get("body", default))
            retry_after = spec.get("retry_after")
            headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
            self._send(status, HTML_TYPE, page.encode("utf-8"), headers)
            return status
        limit = min(max(int(limit_text), 1), MAX_LIMIT) if limit_text.isdigit() else DEFAULT_LIMIT
        body = dumps_lastfm(recent_payload(spec, user, limit, self.state.now(), self.state.seed))
        if mode == "huge":
            return self._send_huge(body, spec.get("bytes", DEFAULT_HUGE_BYTES))
        if mode in ("drip", "drip_headers"):
            return self._send_drip(body, spec.get("delay_s", DEFAULT_DRIP_S), headers_too=mode == "drip_headers")
        self._send(200, JSON_TYPE, body[: len(body) // 2] if mode == "truncated" else body)
        return 200

    def _send_error(self, code: int, status: int | None = None, message: str | None = None) -> int:
        default_status, default_message = ERRORS.get(code, (400, "Operation failed"))
        status = status or default_status
        self._send(status, JSON_TYPE, dumps_lastfm({"error": code, "message": message or default_message}))
        return status

    def _send_huge(self, body: bytes, size: int) -> int:
        """Stream a valid JSON document of ``size`` bytes: the body plus a padding string."""
        head, tail = body[:-1] + b',"padding":"', b'"}'
        padding = max(0, size - len(head) - len(tail))
        self.send_response(200)
        self.send_header("Content-Type", JSON_TYPE)
        self.send_header("Content-Length", str(len(head) + padding + len(tail)))
        self.end_headers()
        chunk = b"x" * 65536
        try:
            self.wfile.write(head)
            for start in range(0, padding, len(chunk)):
                self.wfile.write(chunk[: padding - start])
            self.wfile.write(tail)
        except (BrokenPipeError, ConnectionResetError):
            logger.info("client closed the connection during a huge answer")
        return 200

    def _send_drip(self, body: bytes, interval_s: float, *, headers_too: bool) -> str:
        """Send a valid answer one byte every interval_s: the body only, or the headers too."""
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: {JSON_TYPE}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode("ascii")
        self.close_connection = True
        try:
            if headers_too:
                body = head + body
            else:
                self.wfile.write(head)
                self.wfile.flush()
            for index in range(len(body)):
                self.wfile.write(body[index : index + 1])
                self.wfile.flush()
                time.sleep(interval_s)
        except (BrokenPipeError, ConnectionResetError):
            logger.info("client closed the connection during a dripped answer")
        return "drip"


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then return 0; return 1 if the address cannot be bound."""
    parser = argparse.ArgumentParser(prog="fake_lastfm", description="Serve a fake Last.fm API.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind; 0 picks a free one")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every API answer")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated data")
    arguments = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s fake-lastfm %(levelname)s %(message)s"
    )
    try:
        server = http.server.ThreadingHTTPServer((arguments.host, arguments.port), FakeLastfmHandler)
    except OSError as error:
        logger.error("cannot listen on %s:%s: %s", arguments.host, arguments.port, error)
        return 1
    # Request threads are daemons (the default), so slow and hanging answers never delay shutdown.
    server.state = FakeState(arguments.seed, arguments.latency_ms / 1000)  # type: ignore[attr-defined]

    def stop(signum: int, frame: object) -> None:
        # shutdown() waits for serve_forever() to return, so it must not run on this thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stdout.write(f"fake-lastfm listening on http://{arguments.host}:{server.server_address[1]}/2.0/\n")
    sys.stdout.flush()
    try:
        server.serve_forever()
    finally:
        server.server_close()
    logger.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

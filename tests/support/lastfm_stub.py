"""Last.fm answers for in-process warm runs, served through `responses` (HTTP only)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from urllib.parse import parse_qs
from urllib.parse import urlsplit

import responses

# Where the tests' settings point the Last.fm client; `responses` answers it, nothing listens there.
FAKE_LASTFM_URL = "http://lastfm.test/2.0/"


def recent_payload(
    user: str, artist: str, track: str, *, played: datetime | None = None, now_playing: bool = False
) -> dict:
    """Return a user.getrecenttracks body in the modern wire shape."""
    item = {
        "artist": {"mbid": "", "#text": artist},
        "streamable": "0",
        "image": [
            {
                "size": "small",
                "#text": "https://lastfm.freetls.fastly.net/i/u/34s/0123456789abcdef0123456789abcdef.png",
            },
            {
                "size": "extralarge",
                "#text": "https://lastfm.freetls.fastly.net/i/u/300x300/0123456789abcdef0123456789abcdef.png",
            },
        ],
        "mbid": "",
        "album": {"mbid": "", "#text": f"{artist} album"},
        "name": track,
        "url": f"https://www.last.fm/music/{artist}/_/{track}",
    }
    items = []
    if now_playing:
        items.append({**item, "@attr": {"nowplaying": "true"}})
    if played is not None:
        items.append(
            {**item, "date": {"uts": str(int(played.timestamp())), "#text": played.strftime("%d %b %Y, %H:%M")}}
        )
    attr = {"user": user, "totalPages": "1", "page": "1", "perPage": "1", "total": str(len(items))}
    return {"recenttracks": {"track": items, "@attr": attr}}


class LastfmStub:
    """Per-user answers for the mocked Last.fm: a payload dict, or (status, body)."""

    def __init__(self) -> None:
        self.answers: dict[str, object] = {}
        self.default: object = (503, "<html>Service Unavailable</html>")
        self.calls: list[str] = []

    def callback(self, request):
        user = parse_qs(urlsplit(request.url).query).get("user", [""])[0]
        self.calls.append(user)
        answer = self.answers.get(user.lower(), self.default)
        if isinstance(answer, tuple):
            status, body = answer
            return status, {}, body if isinstance(body, str) else json.dumps(body)
        return 200, {"Content-Type": "application/json"}, json.dumps(answer)

    def fail_everyone(self) -> None:
        self.answers.clear()
        self.default = (503, "<html>Service Unavailable</html>")

    def __enter__(self) -> LastfmStub:
        self.mock = responses.RequestsMock(assert_all_requests_are_fired=False)
        self.mock.__enter__()
        self.mock.add_callback(responses.GET, re.compile(re.escape(FAKE_LASTFM_URL) + r".*"), callback=self.callback)
        return self

    def __exit__(self, *exc_info) -> None:
        self.mock.__exit__(*exc_info)

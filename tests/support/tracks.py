"""The one track builder of the tests: a valid Track whose every field has a keyword default.

A test names only the fields its behaviour depends on.
"""

from __future__ import annotations

from datetime import timedelta

from app.core.snapshot import Track
from tests.support.clock import START

JOGA_URL = "https://www.last.fm/music/Bj%C3%B6rk/_/J%C3%B3ga"
COVER_URL = "https://lastfm.freetls.fastly.net/i/u/300x300/a.png"
# How long before its fetch a track that is not playing was played, unless a test says.
PLAYED_BEFORE_FETCH = timedelta(minutes=3)
# Every field but username, lastfm_username and played_at (which follow
# from username, now_playing and fetched_at).
DEFAULTS = {
    "artist": "Björk",
    "album": "Homogenic",
    "track": "Jóga",
    "url": JOGA_URL,
    "image": COVER_URL,
    "now_playing": False,
    "fetched_at": START,
}


def make_track(username: str = "alice", **fields: object) -> Track:
    """Return username's track: Björk's "Jóga" fetched at START, with fields (Track's names) changed.

    lastfm_username defaults to username + "_fm"; played_at to no time when
    now playing, else PLAYED_BEFORE_FETCH before fetched_at. Track itself
    refuses a field name it does not have.
    """
    values = DEFAULTS | {"lastfm_username": f"{username}_fm"} | fields
    if "played_at" not in values:
        values["played_at"] = None if values["now_playing"] else values["fetched_at"] - PLAYED_BEFORE_FETCH
    return Track(username=username, **values)

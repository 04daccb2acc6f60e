"""The one track builder of the tests: a valid Track whose every field has a keyword default.

A test names only the fields its behaviour depends on.
"""

from __future__ import annotations

from datetime import datetime
from datetime import timedelta

from app.core.snapshot import Track
from tests.support.clock import START

JOGA_URL = "https://www.last.fm/music/Bj%C3%B6rk/_/J%C3%B3ga"
COVER_URL = "https://lastfm.freetls.fastly.net/i/u/300x300/a.png"
# How long before its fetch a track that is not playing was played, unless a test says.
PLAYED_BEFORE_FETCH = timedelta(minutes=3)
_UNSET = object()


def make_track(
    username: str = "alice",
    *,
    lastfm_username: str | None = None,
    artist: str = "Björk",
    album: str = "Homogenic",
    track: str = "Jóga",
    url: str = JOGA_URL,
    image: str = COVER_URL,
    played_at: datetime | None | object = _UNSET,
    now_playing: bool = False,
    fetched_at: datetime = START,
) -> Track:
    """Return username's track: Björk's "Jóga" fetched at fetched_at.

    lastfm_username defaults to username + "_fm"; played_at to no time when
    now playing, else PLAYED_BEFORE_FETCH before fetched_at.
    """
    if played_at is _UNSET:
        played_at = None if now_playing else fetched_at - PLAYED_BEFORE_FETCH
    return Track(
        username=username,
        lastfm_username=lastfm_username if lastfm_username is not None else f"{username}_fm",
        artist=artist,
        album=album,
        track=track,
        url=url,
        image=image,
        played_at=played_at,
        now_playing=now_playing,
        fetched_at=fetched_at,
    )

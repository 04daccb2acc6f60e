"""Last.fm bodies no retry can fix, and times from the future: each is one transient failure, never retried."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest

from app.warm import lastfm
from tests.unit.test_lastfm import NOW
from tests.unit.test_lastfm import fails_once
from tests.unit.test_lastfm import make_client
from tests.unit.test_lastfm import serve


def page(uts: object) -> bytes:
    item = {"artist": {"#text": "Artist"}, "name": "Title", "date": {"uts": uts}}
    return json.dumps({"recenttracks": {"track": [item], "@attr": {"user": "quirky", "total": "1"}}}).encode()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 200_000 + b"]" * 200_000, id="nested-200k-deep"),
        pytest.param(b"[" * 100_000, id="nested-100k-unclosed"),
        pytest.param(page(0).replace(b"0}", b"9" * 5000 + b"}"), id="uts-of-5000-digits"),
        pytest.param(b'{"recenttracks": "\xff\xff"}', id="not-utf-8"),
    ],
)
def test_body_that_can_never_parse_is_not_retried(body, clock, mocked):
    serve(mocked, "quirky", body)

    fails_once(clock, mocked, match="never parse")


def test_uts_string_of_5000_digits_is_not_retried(clock, mocked):
    serve(mocked, "quirky", page("9" * 5000))

    fails_once(clock, mocked, match="uts")


@pytest.mark.parametrize(
    "uts",
    [
        253402300799,  # 9999-12-31T23:59:59Z
        "253402300799",
        int((NOW + timedelta(days=1)).timestamp()),
        int((NOW + lastfm.MAX_FUTURE_PLAYED_AT + timedelta(seconds=1)).timestamp()),
    ],
)
def test_far_future_played_at_is_a_logged_transient_failure_never_retried(uts, clock, mocked, caplog):
    serve(mocked, "quirky", page(uts))

    with caplog.at_level(logging.WARNING, logger="app.lastfm"):
        fails_once(clock, mocked, match="ahead of the run's clock")

    assert "ahead of the run's clock" in caplog.text


@pytest.mark.parametrize("ahead", [timedelta(0), timedelta(minutes=4, seconds=59), -timedelta(days=3650)])
def test_played_at_up_to_a_few_minutes_ahead_is_kept(ahead, clock, mocked):
    uts = int((NOW + ahead).timestamp())
    serve(mocked, "quirky", page(uts))

    track = make_client(clock).fetch_recent_track("member", "quirky", now=NOW)

    assert track.played_at.timestamp() == uts

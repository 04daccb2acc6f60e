"""Image and track links checked the way a browser's URL parser (WHATWG URL) reads them, not urlsplit."""

from __future__ import annotations

import pytest

from app.core.snapshot import safe_image_url
from app.core.snapshot import safe_page_url

# Each of these is either somewhere else for a browser, or ambiguous between parsers.
LOOK_ALIKE_IMAGES = [
    # urlsplit sees host "evil.example\.last.fm"; a browser reads "\" as "/": host evil.example.
    "https://evil.example\\.last.fm/pixel.png",
    "https://evil.example\\@lastfm.freetls.fastly.net/pixel.png",
    "https:\\\\evil.example\\.last.fm/pixel.png",
    "https:/\\evil.example/.last.fm/pixel.png",
    # Encoded separators in the authority: a browser decodes the host, urlsplit does not.
    "https://evil.example%5C.last.fm/pixel.png",
    "https://evil.example%5c.last.fm/pixel.png",
    "https://evil.example%2F.last.fm/pixel.png",
    "https://evil.example%2f.last.fm/pixel.png",
    "https://evil.example%40img.last.fm/pixel.png",
    "https://evil.example%23.last.fm/pixel.png",
    "https://evil.example%3F.last.fm/pixel.png",
    "https://evil%2Eexample.last.fm.evil.example/pixel.png",
    "https://img%2elast%2efm/pixel.png",
    "https://evil.example%00.last.fm/pixel.png",
    # User-info, in every spelling.
    "https://img.last.fm@evil.example/pixel.png",
    "https://img.last.fm:443@evil.example/pixel.png",
    "https://:@img.last.fm/pixel.png",
    "https://user@img.last.fm/pixel.png",
    "https://user:password@img.last.fm/pixel.png",
    # Ports other than the scheme's default, an empty one included.
    "https://img.last.fm:8443/pixel.png",
    "https://img.last.fm:80/pixel.png",
    "http://img.last.fm:443/pixel.png",
    "https://img.last.fm:/pixel.png",
    "https://img.last.fm:0443/pixel.png",
    # Hosts that only look like Last.fm's once normalised, or not at all.
    "https://img.lаst.fm/pixel.png",  # Cyrillic а
    "https://img.last.fm\uff0eevil.example/pixel.png",  # full-width dot
    "https://img.last.fm\u3002evil.example/pixel.png",  # ideographic full stop
    "https://img.last.fm.evil.example/pixel.png",
    "https://img.last.fm./pixel.png",
    "https://img.last.fm%2E/pixel.png",
    "https://[::1]/pixel.png",
    "https://127.0.0.1/pixel.png",
    "https://xn--lst-fma.fm/pixel.png",
    # Scheme and slashes a browser forgives and urlsplit reads differently.
    "https:evil.example/.last.fm/pixel.png",
    "https:/evil.example/.last.fm/pixel.png",
    "https:///evil.example/.last.fm/pixel.png",
    "https:////img.last.fm/pixel.png",
    "//img.last.fm/pixel.png",
    "javascript://img.last.fm/%0aalert(1)",
]


@pytest.mark.parametrize("url", LOOK_ALIKE_IMAGES)
def test_safe_image_url_rejects_look_alike(url):
    assert safe_image_url(url) == ""


@pytest.mark.parametrize("url", [url.replace("img.last.fm", "www.last.fm") for url in LOOK_ALIKE_IMAGES])
def test_safe_page_url_rejects_look_alike(url):
    assert safe_page_url(url) == ""


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://www.last.fm/music/Bj%C3%B6rk", "https://www.last.fm/music/Bj%C3%B6rk"),
        ("https://www.last.fm/music/Björk/_/Jóga", "https://www.last.fm/music/Björk/_/Jóga"),
        ("http://www.last.fm/music/x", "https://www.last.fm/music/x"),
        ("https://www.last.fm:443/music/x", "https://www.last.fm/music/x"),
        ("http://www.last.fm:80/music/x", "https://www.last.fm/music/x"),
        ("HTTPS://WWW.LAST.FM/music/x", "https://www.last.fm/music/x"),
        ("https://www.last.fm", "https://www.last.fm/"),
        ("https://www.last.fm?x=1", "https://www.last.fm/?x=1"),
        ("https://www.last.fm/music/a@b", "https://www.last.fm/music/a@b"),
        ("https://www.last.fm/music/100%25", "https://www.last.fm/music/100%25"),
    ],
)
def test_safe_page_url_keeps_real_links_in_the_form_browsers_read(url, expected):
    assert safe_page_url(url) == expected
    # What the warm job stores passes the reader's check unchanged.
    assert safe_page_url(expected) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://lastfm.freetls.fastly.net/i/u/300x300/0123abcd.png",
            "https://lastfm.freetls.fastly.net/i/u/300x300/0123abcd.png",
        ),
        ("https://img.last.fm/pixel.png", "https://img.last.fm/pixel.png"),
        # A full-width dot is a dot to a browser too: the host it resolves is Last.fm's.
        ("https://img\uff0elast.fm/pixel.png", "https://img.last.fm/pixel.png"),
    ],
)
def test_safe_image_url_keeps_real_images(url, expected):
    assert safe_image_url(url) == expected
    assert safe_image_url(expected) == expected

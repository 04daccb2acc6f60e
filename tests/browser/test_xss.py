"""Hostile Last.fm data in a real browser, CSP on: no script runs, no dialog opens, nothing leaves.

Every payload travels the real path: the fake Last.fm answers it verbatim
(its "track" mode), the warm script publishes it, gunicorn renders it.
"""

from __future__ import annotations

import pytest

from tests.browser.helpers import DESKTOP
from tests.browser.helpers import IMAGE_HOST
from tests.browser.helpers import MEMBERS

PWN = "window.__pwned=1"

# Names: shown as text, never as markup.
TEXT_PAYLOADS = (
    f"<script>{PWN}</script>",
    f'<img src=x onerror="{PWN};alert(1)">',
    '"><script>alert(document.domain)</script>',
    "'><svg onload=alert(1)>",
    "</title><script>alert(1)</script>",
    f'<iframe src="javascript:{PWN}"></iframe>',
    '<a href="javascript:alert(1)">click me</a>',
    "<body onload=alert(1)>",
    "<style>*{display:none!important}</style>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<details open ontoggle=alert(1)>",
    "<input autofocus onfocus=alert(1)>",
    '" onmouseover="alert(1)" x="',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    '<link rel="stylesheet" href="https://evil.example/x.css">',
    '<base href="https://evil.example/">',
    "{{ 7*7 }}{% for x in () %}{% endfor %}",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "\u202egnp.exe\u202c Right-to-left override",
    "\u2066isolate\u2069 \u200f\u061c marks",
    "A" * 10_240,
    "<script>" * 1_280,
    "javascript:alert(1)",
    "null\x00byte\x1b[31m escape",
)
# Track page links: only https on a Last.fm page host may become a link, and
# one that does must stay inside its attribute.
URL_PAYLOADS = (
    "https://www.last.fm/music/x/_/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    f"javascript:{PWN}",
    'https://www.last.fm/music/x"onclick="alert(1)',
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "https://evil.example/music/x",
    "//evil.example/x",
    "https://www.last.fm.evil.example/music/x",
    "https://www.last.fm@evil.example/music/x",
    'https://www.last.fm/music/x" onmouseover="alert(1)',
    "http://www.last.fm/music/x/_/y'onfocus='alert(1)",
)
# Cover art: only https on a Last.fm image host may become an image.
IMAGE_PAYLOADS = (
    f'https://{IMAGE_HOST}/i/u/300x300/a.png"onerror="{PWN}',
    "javascript:alert(1)",
    "data:image/svg+xml,<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>",
    "https://evil.example/cover.png",
    f'https://{IMAGE_HOST}/i/u/300x300/x.png" onerror="alert(1)',
    "//evil.example/cover.png",
    f"https://{IMAGE_HOST}.evil.example/cover.png",
    f"http://{IMAGE_HOST}:8080/cover.png",
    f"https://{IMAGE_HOST}/i/u/300x300/fine.png",
)
BATCHES = range(-(-len(TEXT_PAYLOADS) // len(MEMBERS)))

INSPECT = """() => ({
    pwned: typeof window.__pwned,
    scripts: Array.from(document.scripts).map(script => script.getAttribute('src')),
    handlers: Array.from(document.querySelectorAll('*')).flatMap(element =>
        Array.from(element.attributes).filter(attribute => attribute.name.startsWith('on'))
            .map(attribute => element.tagName + ' ' + attribute.name)),
    foreign: Array.from(document.querySelectorAll(
        'body script, iframe, object, embed, body style, body link, body meta, base, form, input, details, math'))
        .map(element => element.tagName),
    hrefs: Array.from(document.querySelectorAll('a[href]')).map(link => link.getAttribute('href')),
    srcs: Array.from(document.images).map(image => image.getAttribute('src')),
    text: document.querySelector('.listen-list').innerText,
})"""


def provoke_and_inspect(page) -> dict:
    """Give every would-be handler its chance (hover and focus everything); return what INSPECT finds."""
    for element in page.page.locator(".listen-list a, .listen-list img, .listen-list h2, .listen-list p").all():
        element.hover(timeout=5_000)
    for link in page.page.locator("a").all():
        link.focus()
    return page.page.evaluate(INSPECT)


def assert_no_script_ran(found: dict) -> None:
    """Assert INSPECT found no payload run, no handler, no foreign element, only our scripts and links."""
    assert found["pwned"] == "undefined"
    assert found["handlers"] == [] and found["foreign"] == []
    assert [src.split("?")[0] for src in found["scripts"]] == ["/static/relative-time.js", "/static/refresh.js"]
    assert all(href == "/" or href.startswith("https://www.last.fm/") for href in found["hrefs"]), found["hrefs"]


@pytest.mark.parametrize("batch", BATCHES)
def test_xss_corpus_runs_no_script_and_opens_no_dialog(batch, site, visit):
    for index, name in enumerate(MEMBERS):
        first = batch * len(MEMBERS) + index
        track = {
            "name": TEXT_PAYLOADS[first % len(TEXT_PAYLOADS)],
            "artist": TEXT_PAYLOADS[(first + 1) % len(TEXT_PAYLOADS)],
            "album": TEXT_PAYLOADS[(first + 2) % len(TEXT_PAYLOADS)],
            "url": URL_PAYLOADS[first % len(URL_PAYLOADS)],
            "image": IMAGE_PAYLOADS[(first + batch) % len(IMAGE_PAYLOADS)],
            "now_playing": index == 0,
        }
        site.lastfm.set_user(name, mode="track", track=track)
    site.warm_ok()
    page = visit(DESKTOP).open()

    found = provoke_and_inspect(page)

    assert_no_script_ran(found)
    assert all(src.startswith((f"https://{IMAGE_HOST}/", "/static/")) for src in found["srcs"]), found["srcs"]
    assert page.page.locator(".listen-list > li").count() == len(MEMBERS)
    # Markup shows as text; direction overrides are gone.
    assert "<" in found["text"] and "\u202e" not in found["text"] and "\u2066" not in found["text"]
    page.assert_clean()

"""The fresh home page in a real browser: what it lists, where it links, what it loads, and how."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import requests

from app.core.snapshot import parse_time
from app.core.snapshot import safe_page_url
from app.web.filters import relative_time
from tests.browser.helpers import DEMO_MODES
from tests.browser.helpers import DESKTOP
from tests.browser.helpers import IMAGE_HOST
from tests.browser.helpers import MEMBERS
from tests.browser.helpers import PHONE
from tests.browser.helpers import make_state
from tests.support import REPO

HTML_BUDGET = 30 * 1024
CSS_BUDGET = 15 * 1024

LISTED = """() => Array.from(document.querySelectorAll('.listen-list > li')).map(item => ({
    member: item.querySelector('.member-name').textContent,
    memberHref: item.querySelector('a.member').getAttribute('href'),
    track: item.querySelector('.track').textContent.trim(),
    trackHref: item.querySelector('.track a') ? item.querySelector('.track a').getAttribute('href') : null,
    nowPlaying: item.querySelector('.now') !== null,
    playedAt: item.querySelector('time') ? item.querySelector('time').getAttribute('datetime') : null,
}))"""

IMAGES = """() => Array.from(document.querySelectorAll('.listen-list img')).map(image => ({
    src: image.getAttribute('src'), alt: image.getAttribute('alt'), width: image.getAttribute('width'),
    height: image.getAttribute('height'), loading: image.getAttribute('loading'),
}))"""

# Sums the page's layout shifts so far (CLS without the session windows): 0 is no shift at all.
LAYOUT_SHIFT = """() => new Promise(resolve => {
    let total = 0;
    const observer = new PerformanceObserver(list => list.getEntries().forEach(entry => { total += entry.value; }));
    observer.observe({type: 'layout-shift', buffered: true});
    requestAnimationFrame(() => requestAnimationFrame(() => {
        observer.takeRecords().forEach(entry => { total += entry.value; });
        observer.disconnect();
        resolve(total);
    }));
})"""


def test_page_lists_members_and_tracks_in_api_order(site, visit):
    make_state(site, "fresh")
    data = site.api()["data"]
    page = visit(DESKTOP).open()

    shown = page.page.evaluate(LISTED)

    assert [item["member"] for item in shown] == [entry["username"] for entry in data]
    assert [item["track"] for item in shown] == [entry["track"] for entry in data]
    assert sorted(item["member"] for item in shown) == sorted(MEMBERS)
    assert [item["nowPlaying"] for item in shown] == [entry["nowPlaying"] for entry in data]
    assert {item["member"] for item in shown if item["nowPlaying"]} >= {"maya", "kwame"}
    expected_times = [None if entry["nowPlaying"] else entry["playedAt"] for entry in data]
    assert [item["playedAt"] for item in shown] == expected_times
    page.assert_clean()


def test_page_links_members_to_profiles_and_tracks_to_track_pages(site, visit):
    make_state(site, "fresh")
    data = site.api()["data"]
    page = visit(PHONE).open()

    shown = page.page.evaluate(LISTED)

    for item, entry in zip(shown, data, strict=True):
        assert item["memberHref"] == f"https://www.last.fm/user/{entry['lastfmUsername']}"
        assert item["trackHref"] == safe_page_url(entry["url"])
        assert item["trackHref"].startswith("https://www.last.fm/music/")
    page.assert_clean()


def test_page_images_are_lazy_with_width_height_and_alt(site, visit):
    make_state(site, "fresh")
    page = visit(DESKTOP).open()

    images = page.page.evaluate(IMAGES)

    assert len(images) == len(MEMBERS)
    assert all((image["width"], image["height"], image["loading"]) == ("300", "300", "lazy") for image in images)
    covers = [image for image in images if image["src"].startswith(f"https://{IMAGE_HOST}/")]
    placeholders = [image for image in images if image["src"].startswith("/static/placeholder.svg?v=")]
    assert len(covers) + len(placeholders) == len(images)
    assert covers and all(image["alt"].startswith("Cover of ") for image in covers)
    # The starry member has no usable art: a decorative placeholder, silent for screen readers.
    assert placeholders and all(image["alt"] == "" for image in placeholders)
    page.assert_clean()


def test_page_requests_only_the_site_and_lastfm_image_host(site, visit):
    make_state(site, "fresh")
    page = visit(DESKTOP).open()

    covers = page.page.eval_on_selector_all(".listen-list img[src^='https:']", "images => images.map(i => i.src)")

    assert covers and set(page.images) == set(covers)
    assert {urlsplit(url).hostname for url in page.images} == {IMAGE_HOST}
    page.assert_clean()


def test_page_html_and_css_stay_within_budget(site):
    make_state(site, "fresh")

    html = requests.get(site.web.url + "/", timeout=5)
    stylesheet = re.search(r'<link rel="stylesheet" href="([^"]+)"', html.text).group(1)
    css = requests.get(site.web.url + stylesheet, timeout=5)

    assert html.status_code == 200 and len(html.content) < HTML_BUDGET, len(html.content)
    assert css.status_code == 200 and len(css.content) < CSS_BUDGET, len(css.content)


def test_static_urls_carry_content_hash_and_are_cached_for_a_year(site):
    page = requests.get(site.web.url + "/", timeout=5).text

    urls = re.findall(r'(?:href|src)="(/static/[^"]+)"', page)

    expected = {f"/static/{name}" for name in ("style.css", "relative-time.js", "favicon.svg")}
    assert {url.split("?")[0] for url in urls} >= expected
    for url in urls:
        path, version = url.split("?v=")
        assert version == hashlib.sha256((REPO / "app" / "web" / path.lstrip("/")).read_bytes()).hexdigest()[:12]
        response = requests.get(site.web.url + url, timeout=5)
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        outdated = requests.get(f"{site.web.url}{path}?v=0123456789ab", timeout=5)
        assert "immutable" not in outdated.headers.get("Cache-Control", "")


def test_page_does_not_shift_while_it_loads(site, visit):
    make_state(site, "fresh")
    page = visit(PHONE).open()

    assert page.page.evaluate(LAYOUT_SHIFT) == 0
    page.assert_clean()


@pytest.mark.parametrize(("motion", "animated"), [("no-preference", True), ("reduce", False)])
def test_now_playing_animates_only_without_reduced_motion(motion, animated, site, visit):
    make_state(site, "fresh")
    page = visit(PHONE, reduced_motion=motion).open()

    animations = page.page.eval_on_selector_all(
        ".is-playing .eq span", "bars => bars.map(bar => getComputedStyle(bar).animationName)"
    )

    assert animations and all((name != "none") == animated for name in animations), animations
    page.assert_clean()


def test_page_is_complete_without_javascript(site, visit):
    make_state(site, "fresh")
    data = site.api()["data"]
    page = visit(PHONE, java_script_enabled=False)
    page.page.goto(site.web.url + "/")

    members = page.page.locator(".listen-list .member-name").all_inner_texts()
    times = page.page.locator(".listen-list time").all_inner_texts()

    assert members == [entry["username"] for entry in data]
    assert times and all(re.fullmatch(r"just now|\d+ (min|hours?|days?) ago", text) for text in times), times
    assert "Last updated" in page.page.locator(".status").inner_text()
    page.assert_clean()


def test_relative_times_keep_counting_while_the_page_stays_open(site, visit):
    make_state(site, "fresh")
    page = visit(DESKTOP)
    page.page.clock.install()
    page.open()
    server_now = parse_time(page.page.get_attribute("section.listens", "data-now"))

    page.page.clock.fast_forward("10:00")

    shown = page.page.eval_on_selector_all(
        "time[datetime]", "times => times.map(time => [time.dateTime, time.dataset.relative, time.textContent])"
    )
    assert len(shown) >= len(MEMBERS) - len(DEMO_MODES) + 1
    for moment, style, text in shown:
        # The script counts from the server's clock (to the second) plus the time the page has been open.
        later = [server_now + timedelta(minutes=10, seconds=extra) for extra in range(4)]
        expected = {relative_time(parse_time(moment), when, long=style == "long") for when in later}
        assert text in expected, (moment, text, expected)
    assert "Last updated 10 minutes ago" in page.page.locator(".status").inner_text()
    page.assert_clean()

"""The open page refreshing its list in place (static/refresh.js) in a real browser.

A stack of its own serves the page with LISTENS_REFRESH_SECONDS shortened;
every track comes from the fake Last.fm's "track" mode, so the order of each
generation is known in advance, and a new generation is published by the
warm script as in production.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.browser.helpers import DESKTOP
from tests.browser.helpers import IMAGE_HOST
from tests.browser.helpers import MEMBERS
from tests.browser.helpers import PHONE
from tests.browser.helpers import make_state
from tests.browser.test_home_page import LAYOUT_SHIFT
from tests.browser.test_home_page import LISTED
from tests.browser.test_states import SERIOUS
from tests.browser.test_xss import PWN
from tests.browser.test_xss import TEXT_PAYLOADS
from tests.browser.test_xss import URL_PAYLOADS
from tests.browser.test_xss import assert_no_script_ran
from tests.browser.test_xss import provoke_and_inspect
from tests.support.stack import Stack

REFRESH_S = 2
API = "/api/internal/user-listens"

# Every layout shift since the page loaded, summed as it happens.
WATCH_SHIFTS = """() => {
    window.__shift = 0;
    new PerformanceObserver(list => list.getEntries().forEach(entry => { window.__shift += entry.value; }))
        .observe({type: 'layout-shift', buffered: true});
}"""


@pytest.fixture(scope="module")
def refreshing(tmp_path_factory) -> Iterator[Stack]:
    """The site with a page that refreshes every REFRESH_S seconds."""
    folder = tmp_path_factory.mktemp("refresh-site")
    with Stack(folder, members=MEMBERS, env={"LISTENS_REFRESH_SECONDS": str(REFRESH_S)}) as started:
        yield started


@pytest.fixture
def live(refreshing) -> Iterator[Stack]:
    """The refreshing stack with nothing published, served by workers that have shown nothing."""
    refreshing.reset()
    refreshing.replace_workers()
    yield refreshing
    refreshing.reset()


def track(index: int, *, title: str | None = None, now_playing: bool = False, ago_s: int | None = None) -> dict:
    """A track for MEMBERS[index], played ago_s before now (default: the lower the index, the more recent)."""
    name = title or f"Song number {index}"
    return {
        "name": name,
        "artist": f"Artist {index}",
        "album": f"Album {index}",
        "url": f"https://www.last.fm/music/Artist+{index}/_/Song+{index}",
        "image": f"https://{IMAGE_HOST}/i/u/300x300/{index:032x}.png",
        "now_playing": now_playing,
        "uts": int(time.time()) - (600 * (index + 1) if ago_s is None else ago_s),
    }


def publish(site: Stack, tracks: dict[str, dict]) -> dict:
    """Publish a generation with tracks (member -> track, the others' unchanged) and return the API's answer."""
    for name, given in tracks.items():
        site.lastfm.set_user(name, mode="track", track=given)
    site.warm_ok()
    return site.api()


def first_generation(site: Stack) -> dict:
    return publish(site, {name: track(index) for index, name in enumerate(MEMBERS)})


def wait_for_generation(page, generation: int, timeout_s: float) -> None:
    page.page.wait_for_function(
        f"() => document.querySelector('section.listens').dataset.generation === '{generation}'",
        timeout=timeout_s * 1000,
    )


def api_requests(page) -> list:
    requests_seen = []
    page.page.on("request", lambda request: API in request.url and requests_seen.append(request))
    return requests_seen


def test_new_generation_appears_in_place_with_focus_kept_and_no_layout_shift(live, visit):
    first = first_generation(live)
    page = visit(DESKTOP, on=live).open()
    page.page.evaluate(WATCH_SHIFTS)
    origin = page.page.evaluate("performance.timeOrigin")
    # Mark every cover (a property, not an attribute): the same elements must be there afterwards.
    page.page.evaluate("() => document.querySelectorAll('.listen-list img').forEach(i => { i.__mark = i.src; })")
    last = MEMBERS[-1]
    page.page.locator(f".listen-list a.member[href$='/{last}']").focus()
    polls = api_requests(page)

    # MEMBERS[5] starts playing (first now), MEMBERS[2] played something new
    # (second), the others keep their tracks: the last entry keeps its place.
    second = publish(live, {MEMBERS[5]: track(5, now_playing=True), MEMBERS[2]: track(2, title="A new song", ago_s=30)})
    started = time.monotonic()
    wait_for_generation(page, second["generation"], REFRESH_S + 10)

    assert second["generation"] != first["generation"]
    shown = page.page.evaluate(LISTED)
    assert [item["member"] for item in shown] == [entry["username"] for entry in second["data"]]
    assert [item["member"] for item in shown][:2] == [MEMBERS[5], MEMBERS[2]]
    assert [item["track"] for item in shown] == [entry["track"] for entry in second["data"]]
    assert [item["nowPlaying"] for item in shown] == [entry["nowPlaying"] for entry in second["data"]]
    # In place: no navigation, and within one interval of the publish (the
    # first poll after it brought the change; the bound is generous for a busy machine).
    assert page.page.evaluate("performance.timeOrigin") == origin
    assert len(polls) <= 2 and time.monotonic() - started < REFRESH_S + 10, len(polls)
    focused = page.page.evaluate("() => document.activeElement.getAttribute('href')")
    assert focused == f"https://www.last.fm/user/{last}"
    kept = page.page.evaluate(
        "() => Array.from(document.querySelectorAll('.listen-list img')).map(i => [i.src, i.__mark || null])"
    )
    assert all(mark == src for src, mark in kept), kept
    assert page.page.evaluate("window.__shift") == 0
    assert page.page.evaluate(LAYOUT_SHIFT) == 0
    assert "Last updated" in page.page.locator(".status").first.inner_text()
    page.assert_clean()


def test_live_region_says_list_updated_at_most_once_a_minute(live, visit):
    first_generation(live)
    page = visit(PHONE, on=live).open()
    page.page.evaluate("""() => {
        window.__said = [];
        const region = document.querySelector('[role=status][aria-live=polite]');
        new MutationObserver(() => window.__said.push(region.textContent)).observe(region, {childList: true, subtree: true, characterData: true});
    }""")

    second = publish(live, {MEMBERS[3]: track(3, title="Second", ago_s=20)})
    wait_for_generation(page, second["generation"], REFRESH_S + 10)
    third = publish(live, {MEMBERS[4]: track(4, title="Third", ago_s=10)})
    wait_for_generation(page, third["generation"], REFRESH_S + 10)

    said = [text for text in page.page.evaluate("window.__said") if text]
    assert said == ["List updated"], said
    assert page.page.locator("[aria-live]").count() == 1
    page.assert_clean()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_serious_violation_before_or_after_an_update(scheme, live, visit):
    first_generation(live)
    # Only this context bypasses the CSP: Playwright injects axe-core as an inline script.
    page = visit(DESKTOP, on=live, color_scheme=scheme, reduced_motion="reduce", bypass_csp=True).open()
    before = page.axe_violations()

    second = publish(live, {MEMBERS[6]: track(6, now_playing=True)})
    wait_for_generation(page, second["generation"], REFRESH_S + 10)
    after = page.axe_violations()
    # The notice shown when the cache goes away under an open page is checked too.
    live.cache.stop()
    page.page.wait_for_selector(".status-off", timeout=(REFRESH_S + 10) * 1000)
    with_notice = page.axe_violations()

    for violations in (before, after, with_notice):
        assert [violation for violation in violations if violation["impact"] in SERIOUS] == []
    # Reduced motion: nothing on the page animates, updated or not.
    assert page.page.evaluate("document.getAnimations().length") == 0
    page.assert_clean()


def test_xss_corpus_in_a_new_generation_runs_no_script(live, visit):
    first_generation(live)
    page = visit(DESKTOP, on=live).open()
    page.page.evaluate(
        "() => { window.__violations = 0;"
        " document.addEventListener('securitypolicyviolation', () => { window.__violations += 1; }); }"
    )

    hostile = {}
    for index, name in enumerate(MEMBERS):
        hostile[name] = {
            **track(index, ago_s=10 + index),
            "name": TEXT_PAYLOADS[index],
            "artist": TEXT_PAYLOADS[index + len(MEMBERS)],
            "album": TEXT_PAYLOADS[(index + 2 * len(MEMBERS)) % len(TEXT_PAYLOADS)],
            "url": URL_PAYLOADS[index],
        }
    second = publish(live, hostile)
    wait_for_generation(page, second["generation"], REFRESH_S + 10)
    found = provoke_and_inspect(page)

    assert_no_script_ran(found)
    assert PWN not in page.page.evaluate("Object.keys(window).join()")
    assert "<script>" in found["text"]
    assert page.page.locator(".listen-list > li").count() == len(MEMBERS)
    assert page.page.evaluate("window.__violations") == 0
    page.assert_clean()


HIDE = """hidden => {
    window.__hidden = hidden;
    document.dispatchEvent(new Event('visibilitychange'));
}"""
# The Page Visibility API as a hidden tab reports it, switched by the test.
EMULATE_VISIBILITY = """
window.__hidden = false;
Object.defineProperty(Document.prototype, 'hidden', {get: () => window.__hidden});
Object.defineProperty(Document.prototype, 'visibilityState', {get: () => window.__hidden ? 'hidden' : 'visible'});
"""


def test_hidden_tab_sends_no_request_and_catches_up_when_shown(live, visit):
    first_generation(live)
    page = visit(DESKTOP, on=live)
    page.page.add_init_script(EMULATE_VISIBILITY)
    page.open()
    polls = api_requests(page)
    page.page.evaluate(HIDE, True)

    second = publish(live, {MEMBERS[1]: track(1, now_playing=True)})
    page.page.wait_for_timeout(3 * REFRESH_S * 1000)
    hidden_polls = len(polls)
    unchanged = page.page.evaluate("document.querySelector('section.listens').dataset.generation")
    page.page.evaluate(HIDE, False)
    wait_for_generation(page, second["generation"], REFRESH_S + 10)

    assert hidden_polls == 0
    assert unchanged != str(second["generation"])
    assert len(polls) >= 1
    page.assert_clean()


def test_unavailable_answer_keeps_the_list_and_shows_a_notice(live, visit):
    first = first_generation(live)
    page = visit(PHONE, on=live).open()
    before = page.page.evaluate(LISTED)

    live.cache.stop()
    page.page.wait_for_selector(".status-off", timeout=(REFRESH_S + 10) * 1000)

    assert page.page.evaluate(LISTED) == before
    assert page.page.locator("section.listens").get_attribute("data-state") == "fresh"
    assert page.page.locator("section.listens").get_attribute("data-generation") == str(first["generation"])
    assert "Listening activity is unavailable" not in page.page.locator("section.listens").inner_text()
    assert page.page.locator(".status-off").count() == 1
    # Back: the next generation replaces the notice.
    live.cache.start()
    second = publish(live, {MEMBERS[2]: track(2, now_playing=True)})
    wait_for_generation(page, second["generation"], REFRESH_S + 10)
    page.page.wait_for_selector(".status-off", state="detached", timeout=(REFRESH_S + 10) * 1000)
    page.assert_clean()


@pytest.mark.parametrize("failure", ["503", "network"])
def test_failing_api_keeps_the_list_and_backs_off(failure, live, visit):
    first_generation(live)
    page = visit(DESKTOP, on=live).open()
    before = page.page.evaluate(LISTED)
    asked = []

    def fail(route) -> None:
        asked.append(time.monotonic())
        if failure == "503":
            route.fulfill(status=503, content_type="application/json", body='{"error": "Service Unavailable"}')
        else:
            route.abort("connectionrefused")

    page.context.route(f"**{API}", fail)
    second = publish(live, {MEMBERS[7]: track(7, now_playing=True)})
    page.page.wait_for_timeout(1000 * REFRESH_S * 8)

    # Asked after about 2, 4 and 8 s (doubling from the 2 s interval), not every 2 s.
    assert 2 <= len(asked) <= 4, asked
    gaps = [later - earlier for earlier, later in zip(asked, asked[1:], strict=False)]
    assert gaps[0] >= 1.5 * REFRESH_S, gaps
    assert page.page.evaluate(LISTED) == before
    assert page.page.locator("section.listens").get_attribute("data-generation") != str(second["generation"])
    # A failed request is logged by the browser itself; the script logs nothing.
    assert all("Failed to load resource" in message for message in page.console_errors), page.console_errors
    page.console_errors.clear()
    page.assert_clean()


def test_request_taking_over_ten_seconds_is_abandoned_and_the_list_kept(live, visit):
    first_generation(live)
    page = visit(DESKTOP, on=live)
    pending = []
    page.context.route(f"**{API}", lambda route: pending.append(route))
    # The page's clock stands still from the start: it moves only when the test moves it.
    page.page.clock.install(time=1_800_000_000)
    page.page.clock.pause_at(1_800_000_001)
    page.page.goto(live.web.url + "/")
    before = page.page.evaluate(LISTED)

    def run_for(ms: int) -> int:
        page.page.clock.run_for(ms)
        page.page.wait_for_timeout(300)
        return len(pending)

    asked_at_first_poll = run_for(REFRESH_S * 1000)
    asked_before_time_out = run_for(9_900)
    asked_after_time_out = run_for(200 + REFRESH_S * 1000 + 500)
    asked_after_backoff = run_for(REFRESH_S * 1000)

    assert asked_at_first_poll == 1 and asked_before_time_out == 1
    # Abandoned at 10 s; then twice the interval, not one interval, before the next request.
    assert asked_after_time_out == 1
    assert asked_after_backoff == 2
    assert page.page.evaluate(LISTED) == before
    page.assert_clean()


def test_unreachable_answer_keeps_the_list_until_a_reachable_one(live, visit):
    first = first_generation(live)
    page = visit(DESKTOP, on=live).open()
    before = page.page.evaluate(LISTED)

    def unreachable(route) -> None:
        # The answer of a worker that serves its last snapshot while memcached is down.
        answer = route.fetch().json()
        route.fulfill(status=200, content_type="application/json", json={**answer, "reachable": False})

    page.context.route(f"**{API}", unreachable)
    second = publish(live, {MEMBERS[3]: track(3, now_playing=True)})
    page.page.wait_for_selector(".status-off", timeout=(REFRESH_S + 10) * 1000)

    assert page.page.evaluate(LISTED) == before
    assert page.page.locator("section.listens").get_attribute("data-generation") == str(first["generation"])
    # Without "reachable" (as today's API answers), an answer counts as reachable.
    page.context.unroute(f"**{API}")
    wait_for_generation(page, second["generation"], REFRESH_S + 10)
    assert page.page.locator(".status-off").count() == 0
    page.assert_clean()


def test_state_line_follows_a_stale_page_turning_fresh(live, visit):
    make_state(live, "stale")
    page = visit(PHONE, on=live).open()
    assert "These listens may be out of date" in page.page.locator("section.listens").inner_text()
    assert page.page.locator(".now-stale").count() >= 1

    live.warm_ok()
    fresh = live.api()
    wait_for_generation(page, fresh["generation"], REFRESH_S + 10)

    text = page.page.locator("section.listens").inner_text()
    assert page.page.locator("section.listens").get_attribute("data-state") == "fresh"
    assert "These listens may be out of date" not in text and "Last updated just now" in text
    assert page.page.locator(".now-stale").count() == 0
    assert page.page.locator(".is-playing .eq").count() == sum(entry["nowPlaying"] for entry in fresh["data"])
    page.assert_clean()

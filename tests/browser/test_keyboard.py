"""The page by keyboard alone: every link reachable in reading order, with a visible focus ring."""

from __future__ import annotations

from tests.browser.helpers import MEMBERS
from tests.browser.helpers import PHONE
from tests.browser.helpers import make_state

FOCUSED = """() => {
    const element = document.activeElement;
    const style = getComputedStyle(element);
    return {
        href: element.href || null,
        inList: element.closest('.listen-list') !== null,
        footer: element.closest('.site-footer') !== null,
        focusVisible: element.matches(':focus-visible'),
        outlineStyle: style.outlineStyle,
        outlineWidth: parseFloat(style.outlineWidth),
    };
}"""


def test_keyboard_reaches_every_member_and_track_link_with_visible_focus(site, visit):
    make_state(site, "fresh")
    page = visit(PHONE).open()
    links = page.page.eval_on_selector_all(".listen-list a", "links => links.map(link => link.href)")
    reached = []

    for _press in range(len(links) + 10):
        page.page.keyboard.press("Tab")
        focused = page.page.evaluate(FOCUSED)
        if focused["footer"]:
            break
        if focused["inList"]:
            reached.append(focused)

    assert len(links) == 2 * len(MEMBERS)
    assert [focused["href"] for focused in reached] == links
    for focused in reached:
        assert focused["focusVisible"] and focused["outlineStyle"] == "solid" and focused["outlineWidth"] >= 2, focused
    page.assert_clean()

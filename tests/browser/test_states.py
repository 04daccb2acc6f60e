"""Each state of the page in a real browser: its wording, screenshots, and accessibility (axe)."""

from __future__ import annotations

import json

import pytest

from tests.browser.helpers import DESKTOP
from tests.browser.helpers import PHONE
from tests.browser.helpers import STATES
from tests.browser.helpers import make_state
from tests.support import REPO

# What a visitor reads in each state; each is unique to its state.
WORDING = {
    "warming": ("Warming up", "Back in a few minutes"),
    "fresh": ("Last updated",),
    "stale": ("These listens may be out of date", "updated 25 minutes ago"),
    "empty": ("Nobody has listened to anything recently", "Checked"),
    "unavailable": ("Listening activity is unavailable right now", "try again in a few minutes"),
}
SERIOUS = ("serious", "critical")
AXE_RESULTS = REPO / "artifacts" / "axe"


@pytest.mark.parametrize("state", STATES)
def test_state_page_says_what_visitors_need_to_know(state, site, visit):
    make_state(site, state)

    for size in (PHONE, DESKTOP):
        for scheme in ("light", "dark"):
            page = visit(size, color_scheme=scheme).open()
            section = page.page.locator("section.listens")
            assert section.get_attribute("data-state") == state
            text = section.inner_text()
            for phrase in WORDING[state]:
                assert phrase in text, (phrase, text)
            for other, phrases in WORDING.items():
                assert other == state or phrases[0] not in text, (state, other)
            suffix = "" if scheme == "light" else "-dark"
            page.screenshot(f"{state}-{size[0]}x{size[1]}{suffix}")
            page.assert_clean()


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("state", STATES)
def test_state_page_has_no_serious_accessibility_violations(state, scheme, site, visit):
    make_state(site, state)

    for size in (PHONE, DESKTOP):
        # Only these contexts bypass the CSP: Playwright injects axe-core as an inline script.
        page = visit(size, color_scheme=scheme, bypass_csp=True).open()
        violations = page.axe_violations()
        # Every finding, minor ones included, is kept for people to read.
        AXE_RESULTS.mkdir(parents=True, exist_ok=True)
        (AXE_RESULTS / f"{state}-{size[0]}x{size[1]}-{scheme}.json").write_text(json.dumps(violations, indent=2))

        serious = [violation for violation in violations if violation["impact"] in SERIOUS]
        assert serious == [], serious
        page.assert_clean()

"""Helpers for the browser tests: a watched page, fake cover art, screenshots and axe.

A Visit is one browser context with one page, watched for what must never
happen: a request to a host other than the site and Last.fm's image host, a
console error, an uncaught exception or a dialog. Requests for Last.fm images
never leave the machine: the context answers them with a generated cover and
counts them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from tests.support import REPO
from tests.support import wait_until
from tests.support.stack import Stack

CHROMIUM = Path("/usr/bin/chromium")
# Playwright's own launch covers most of the flags a test browser needs; these
# keep Chromium from calling home (no machine here reaches the internet).
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
IMAGE_HOST = "lastfm.freetls.fastly.net"
# Eight members, as many as the page shows by default (LISTENS_ITEMS).
MEMBERS = ("maya", "jonas", "priya", "tomasz", "lea", "kwame", "sofia", "ren")
# The README's fresh page: at least two members now playing, and one without cover
# art (the fake's "starry" mode only has Last.fm's placeholder star, which is dropped).
DEMO_MODES = {"maya": "now_playing", "kwame": "now_playing", "lea": "starry"}
STATES = ("warming", "fresh", "stale", "empty", "unavailable")
PHONE = (390, 844)
DESKTOP = (1280, 800)
SCREENSHOTS = REPO / "artifacts" / "screenshots"
STALE_AGE = timedelta(minutes=25)


def axe_script() -> Path:
    """Return the path of axe-core's axe.min.js, as bundled by the axe-playwright-python wheel."""
    spec = importlib.util.find_spec("axe_playwright_python")
    script = Path(spec.origin).parent / "axe.min.js" if spec is not None and spec.origin else None
    if script is None or not script.is_file():
        raise FileNotFoundError(
            "axe-core is missing: run 'pip install -r requirements-dev.txt' (make test does this), "
            "which installs axe-playwright-python and its bundled axe.min.js"
        )
    return script


def fake_cover(path: str) -> bytes:
    """Return an SVG album cover drawn from path: the same path gets the same cover."""
    digest = hashlib.sha256(path.encode("utf-8")).digest()
    first = digest[0] * 360 // 256
    second = (first + 35 + digest[1] % 150) % 360
    light = 48 + digest[2] % 18
    white = 'fill="#fff" fill-opacity=".25"'
    rings = 'fill="none" stroke="#fff" stroke-opacity=".25"'
    shapes = (
        f'<circle cx="{90 + digest[3] % 120}" cy="{80 + digest[4] % 100}" r="{50 + digest[5] % 50}" {white}/>',
        "".join(
            f'<rect y="{40 + row * 48}" width="300" height="{10 + digest[6 + row] % 18}" {white}/>' for row in range(5)
        ),
        "".join(
            f'<circle cx="150" cy="150" r="{24 + ring * 26}" {rings} stroke-width="{3 + digest[7 + ring] % 6}"/>'
            for ring in range(5)
        ),
        f'<path d="M0 {200 + digest[8] % 60} L{100 + digest[9] % 100} {60 + digest[10] % 80}'
        f' L300 {180 + digest[11] % 80} V300 H0Z" fill="#000" fill-opacity=".22"/>',
    )
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 300 300" width="300" height="300">'
        '<defs><linearGradient id="g" x1="0" y1="0" x2="1" y2="1">'
        f'<stop offset="0" stop-color="hsl({first} 72% {light}%)"/>'
        f'<stop offset="1" stop-color="hsl({second} 60% {light - 22}%)"/>'
        '</linearGradient></defs><rect width="300" height="300" fill="url(#g)"/>'
        f"{shapes[digest[12] % len(shapes)]}</svg>"
    )
    return svg.encode("utf-8")


@dataclasses.dataclass
class Visit:
    """One context and page on the site, and everything they did that a test checks."""

    context: object
    page: object
    site_origin: str
    images: list[str] = dataclasses.field(default_factory=list)
    offsite: list[str] = dataclasses.field(default_factory=list)
    console_errors: list[str] = dataclasses.field(default_factory=list)
    dialogs: list[str] = dataclasses.field(default_factory=list)

    def route(self, route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" == self.site_origin:
            route.continue_()
        elif parts.scheme == "https" and parts.hostname == IMAGE_HOST:
            self.images.append(url)
            route.fulfill(status=200, content_type="image/svg+xml", body=fake_cover(parts.path))
        else:
            self.offsite.append(url)
            route.abort("blockedbyclient")

    def console(self, message) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def open(self, path: str = "/") -> Visit:
        """Load path, wait until every image has loaded (scrolling lazy ones in), and return self."""
        response = self.page.goto(self.site_origin + path, wait_until="load")
        assert response is not None and response.status == 200, response and response.status
        self.page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        self.page.wait_for_function(
            "() => Array.from(document.images).every(image => image.complete && image.naturalWidth > 0)", timeout=10_000
        )
        self.page.evaluate("window.scrollTo(0, 0)")
        return self

    def assert_clean(self) -> None:
        """Fail on any off-site request, console error, page error or dialog seen so far."""
        assert self.offsite == [], f"requests to other hosts: {self.offsite}"
        assert self.console_errors == [], f"console errors: {self.console_errors}"
        assert self.dialogs == [], f"dialogs opened: {self.dialogs}"

    def screenshot(self, name: str) -> Path:
        """Write a full-page screenshot to artifacts/screenshots/<name>.png and return its path."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True, animations="disabled")
        return path

    def axe_violations(self) -> list[dict]:
        """Run axe-core on the page and return its violations (each with id, impact and nodes)."""
        self.page.add_script_tag(path=str(axe_script()))
        return self.page.evaluate(
            "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
            ".map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))"
        )


def make_state(site: Stack, state: str) -> None:
    """Bring the site into state, the way it happens in production."""
    for name, mode in DEMO_MODES.items():
        site.lastfm.set_user(name, mode=mode)
    for name in set(MEMBERS) - set(DEMO_MODES):
        site.lastfm.set_user(name, mode="not_playing")
    if state == "fresh":
        site.warm_ok()
    elif state == "stale":
        site.warm_at(datetime.now(UTC) - STALE_AGE)
    elif state == "empty":
        for name in MEMBERS:
            site.lastfm.set_user(name, mode="empty")
        site.warm_ok()
    elif state == "unavailable":
        site.cache.stop()
    else:
        assert state == "warming", state
    # Poll: after memcached comes back, a worker may first drop its broken client.
    wait_until(lambda: site.state() == state, 10, f"the site to be {state}")

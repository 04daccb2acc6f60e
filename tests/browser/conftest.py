"""Fixtures for the browser tests: the real stack, a headless Chromium from Debian, watched pages.

The stack is the deployed one: memcached, the fake Last.fm, gunicorn with
deploy/gunicorn.conf.py, and the warm script. Each test starts from an empty
cache and a reset fake, and produces the state it needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from collections.abc import Callable
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path

import pytest
import requests

from app.core.settings import load_settings
from app.warm import job
from tests import support
from tests.browser.helpers import CHROMIUM
from tests.browser.helpers import CHROMIUM_ARGS
from tests.browser.helpers import DEMO_MODES
from tests.browser.helpers import MEMBERS
from tests.browser.helpers import Visit
from tests.support import FakeLastfm
from tests.support import Gunicorn
from tests.support import MemcachedProcess
from tests.support import run_warm
from tests.support import wait_until

STALE_AGE = timedelta(minutes=25)


@dataclasses.dataclass
class Stack:
    """The running site, and how to bring it into each of its states."""

    cache: MemcachedProcess
    lastfm: FakeLastfm
    web: Gunicorn
    env: dict[str, str]

    def reset(self) -> None:
        """Empty the cache and reset the fake: nothing published, every member answers normally."""
        if self.cache.process.poll() is not None:
            self.cache.start()
        self.cache.flush()
        self.lastfm.control("reset")

    def replace_workers(self) -> None:
        """Replace gunicorn's workers, as `systemctl reload listens-web` does.

        Each worker keeps the newest snapshot it has shown and never shows an
        older one, and shows it while memcached is down: a test's state must
        not depend on what the previous test showed.
        """
        arbiter = self.web.process.pid
        children = Path(f"/proc/{arbiter}/task/{arbiter}/children")
        old = set(children.read_text().split())
        os.kill(arbiter, signal.SIGHUP)

        def replaced() -> bool:
            workers = set(children.read_text().split())
            if len(workers) != len(old) or workers & old:
                return False
            return requests.get(f"{self.web.url}/healthz", timeout=5).status_code in (200, 503)

        wait_until(replaced, 30, "gunicorn's workers replaced")

    def warm(self) -> None:
        """Run the warm script once, as the timer does, and require a published snapshot."""
        run = run_warm(self.env)
        assert run.returncode == 0 and "outcome=published" in run.stderr, run.stderr

    def warm_at(self, moment: datetime) -> None:
        """Publish a snapshot as a warm run started at moment would have (Last.fm's clock too)."""
        self.lastfm.control("clock", {"now": moment.timestamp()})
        try:
            result = job.run(load_settings(self.env), now=moment)
        finally:
            self.lastfm.control("clock", {"now": None})
        assert result.outcome == "published", result.summary()

    def make(self, state: str) -> None:
        """Bring the site into state, the way it happens in production."""
        for name, mode in DEMO_MODES.items():
            self.lastfm.set_user(name, mode=mode)
        for name in set(MEMBERS) - set(DEMO_MODES):
            self.lastfm.set_user(name, mode="not_playing")
        if state == "fresh":
            self.warm()
        elif state == "stale":
            self.warm_at(datetime.now(UTC) - STALE_AGE)
        elif state == "empty":
            for name in MEMBERS:
                self.lastfm.set_user(name, mode="empty")
            self.warm()
        elif state == "unavailable":
            self.cache.stop()
        else:
            assert state == "warming", state
        # Poll: after memcached comes back, a worker may first drop its broken client.
        wait_until(lambda: self.state() == state, 10, f"the site to be {state}")

    def state(self) -> str:
        return requests.get(f"{self.web.url}/api/internal/user-listens", timeout=5).json()["state"]

    def api(self) -> dict:
        response = requests.get(f"{self.web.url}/api/internal/user-listens", timeout=5)
        assert response.status_code == 200
        return response.json()


def start_stack(folder, started: contextlib.ExitStack, **extra_env: str) -> Stack:
    """Start memcached + fake Last.fm + gunicorn (extra_env added to its settings), stopped by started."""
    database = folder / "listens.sqlite3"
    support.add_members(database, MEMBERS)
    cache = MemcachedProcess().start()
    started.callback(cache.stop)
    lastfm = FakeLastfm().start()
    started.callback(lastfm.stop)
    env = support.stack_env(cache.address, lastfm.url, database, **extra_env)
    web = Gunicorn(env).start(folder / "gunicorn.log")
    started.callback(web.stop)
    return Stack(cache, lastfm, web, env)


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[Stack]:
    """memcached + fake Last.fm + gunicorn, with the eight members in a fresh database."""
    with contextlib.ExitStack() as started:
        yield start_stack(tmp_path_factory.mktemp("browser-site"), started)


@pytest.fixture
def site(stack) -> Stack:
    """The stack with nothing published (the warming state), served by workers that have shown nothing."""
    stack.reset()
    stack.replace_workers()
    yield stack
    # A test that stopped memcached leaves it running again for the next one.
    stack.reset()


@pytest.fixture(scope="session")
def chromium():
    """Debian's headless Chromium, driven by Playwright; fail (never skip) when it is missing."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run 'apt-get install chromium' (.ci/run does this)", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "playwright is missing: run 'pip install -r requirements-dev.txt' (make test does this)", pytrace=False
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
        yield browser
        browser.close()


@pytest.fixture
def visit(chromium, stack) -> Iterator[Callable[..., Visit]]:
    """Return a function opening a watched page on the site; every context is closed afterwards.

    Keyword arguments go to Playwright's new_context (viewport size, color_scheme,
    reduced_motion, java_script_enabled, bypass_csp...); size is (width, height);
    on is another Stack than the session's.
    """
    contexts = []

    def new_visit(size: tuple[int, int] = (1280, 800), on: Stack | None = None, **options) -> Visit:
        width, height = size
        context = chromium.new_context(viewport={"width": width, "height": height}, **options)
        contexts.append(context)
        page = context.new_page()
        watched = Visit(context, page, (on or stack).web.url)
        context.route("**/*", watched.route)
        page.on("console", watched.console)
        page.on("pageerror", lambda error: watched.console_errors.append(f"uncaught: {error}"))
        page.on("dialog", watched.dialog)
        return watched

    yield new_visit
    for context in contexts:
        context.close()

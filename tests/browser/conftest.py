"""Fixtures for the browser tests: the real stack, a headless Chromium from Debian, watched pages.

The stack is the deployed one: memcached, the fake Last.fm, gunicorn with
deploy/gunicorn.conf.py, and the warm script. Each test starts from an empty
cache and a reset fake, and produces the state it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator

import pytest

from tests.browser.helpers import CHROMIUM
from tests.browser.helpers import CHROMIUM_ARGS
from tests.browser.helpers import MEMBERS
from tests.browser.helpers import Visit
from tests.support.stack import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[Stack]:
    """memcached + fake Last.fm + gunicorn, with the eight members in a fresh database."""
    with Stack(tmp_path_factory.mktemp("browser-site"), members=MEMBERS) as started:
        yield started


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

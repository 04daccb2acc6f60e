"""Shared fixtures: settings, app, client, runner, a real memcached, a fake or a mocked Last.fm; each folder's tier mark."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import create_app
from app.core.settings import Settings
from tests.support import TEST_API_KEY
from tests.support import FakeLastfm
from tests.support import MemcachedProcess
from tests.support.lastfm_stub import FAKE_LASTFM_URL
from tests.support.lastfm_stub import LastfmStub

TESTS = Path(__file__).resolve().parent
# A test's tier is its folder: every test under tests/faults/ carries the
# `faults` mark, so `pytest -m faults` selects the folder and a new file there
# cannot forget its mark (setup.cfg lists the marks).
FOLDER_MARKS = ("integration", "e2e", "faults", "ops", "browser", "frontdoor", "model")


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        folder = item.path.relative_to(TESTS).parts[0]
        if folder in FOLDER_MARKS:
            item.add_marker(folder)


@pytest.fixture(scope="session")
def memcached_process():
    """Start one real memcached for the session; tests flush it first."""
    with MemcachedProcess() as server:
        yield server


@pytest.fixture
def memcached(memcached_process) -> MemcachedProcess:
    """The session's memcached, emptied, so test order never matters."""
    memcached_process.flush()
    return memcached_process


@pytest.fixture
def settings(tmp_path, request) -> Settings:
    """Settings for one test: its own database; the session memcached when the test uses it."""
    servers = ("127.0.0.1:1",)
    if "memcached" in request.fixturenames:
        servers = (request.getfixturevalue("memcached").address,)
    return Settings(
        lastfm_api_key=TEST_API_KEY,
        memcached_servers=servers,
        lastfm_url=FAKE_LASTFM_URL,
        database=tmp_path / "listens.sqlite3",
        rate=0,
        deadline_s=30,
        # Tests read right after a publish; test_recheck.py covers the interval.
        pointer_recheck_s=0,
        # Never the default under /var/lib/prometheus: tests that want the file set one.
        metrics_file=None,
    )


@pytest.fixture
def app(settings):
    app = create_app(settings)
    app.config.update(TESTING=True)
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def lastfm():
    """The fake Last.fm server (devtools/fake_lastfm.py) as a process of its own, for one test."""
    with FakeLastfm() as server:
        yield server


@pytest.fixture
def stub():
    """Last.fm mocked at the HTTP boundary; it answers only what a test (or a module's own stub) tells it."""
    with LastfmStub() as stub:
        yield stub

"""Shared fixtures: settings, app, client, runner, and a real memcached."""

from __future__ import annotations

import pytest

from app import create_app
from app.core.settings import Settings
from tests.support import TEST_API_KEY
from tests.support import MemcachedProcess

FAKE_LASTFM_URL = "http://lastfm.test/2.0/"


@pytest.fixture(scope="session")
def memcached_process():
    """Start one real memcached for the session; tests flush it first."""
    server = MemcachedProcess().start()
    yield server
    server.stop()


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

"""Fixtures of the front-door tests: memcached, the fake Last.fm, gunicorn and nginx as real processes."""

from __future__ import annotations

import pytest

from tests.frontdoor.helpers import FrontDoor


@pytest.fixture
def front(tmp_path):
    """A whole site behind nginx (deploy/nginx/listens.conf), one snapshot published; stopped after the test."""
    site = FrontDoor.start(tmp_path)
    yield site
    site.stop()


@pytest.fixture
def front_warming(tmp_path):
    """The same site before its first warm run: memcached empty, the page in the warming state."""
    site = FrontDoor.start(tmp_path, publish=False)
    yield site
    site.stop()

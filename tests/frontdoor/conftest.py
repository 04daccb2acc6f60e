"""Fixtures of the front-door tests: memcached, the fake Last.fm, gunicorn and nginx as real processes."""

from __future__ import annotations

import pytest

from tests.frontdoor.helpers import front_door


@pytest.fixture
def front(tmp_path):
    """A whole site behind nginx (deploy/nginx/listens.conf), one snapshot published; stopped after the test."""
    with front_door(tmp_path) as site:
        yield site


@pytest.fixture
def front_warming(tmp_path):
    """The same site before its first warm run: memcached empty, the page in the warming state."""
    with front_door(tmp_path, publish=False) as site:
        yield site

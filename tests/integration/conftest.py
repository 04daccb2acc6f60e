"""Fixtures of the integration tests: the mocked Last.fm."""

from __future__ import annotations

import pytest

from tests.integration.lastfm_stub import LastfmStub


@pytest.fixture
def stub():
    """Last.fm mocked at the HTTP boundary; it answers only what a test (or a module's own stub) tells it."""
    with LastfmStub() as stub:
        yield stub

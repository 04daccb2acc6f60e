"""Fixtures of the unit tests: a fake clock, and Last.fm's HTTP mocked with responses."""

from __future__ import annotations

import pytest
import responses

from tests.support.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def mocked():
    """Mock Last.fm's HTTP: any unregistered URL raises, and every registered answer must be asked for."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as requests_mock:
        yield requests_mock

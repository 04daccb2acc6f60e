"""Fixtures of the fault-injection tests: whole sites as real processes, stopped after each test."""

from __future__ import annotations

import contextlib

import pytest

from tests.support.stack import Stack


@pytest.fixture
def make_stack(tmp_path):
    """Return a factory of Stacks (memcached, fake Last.fm, gunicorn); each is stopped after the test."""
    with contextlib.ExitStack() as stacks:
        count = 0

        def make(**kwargs) -> Stack:
            nonlocal count
            count += 1
            return stacks.enter_context(Stack(tmp_path / f"stack-{count - 1}", **kwargs))

        yield make

"""Fixtures of the fault-injection tests: whole sites as real processes, stopped after each test."""

from __future__ import annotations

import pytest

from tests.faults.helpers import Stack


@pytest.fixture
def make_stack(tmp_path):
    """Return a factory of Stacks (memcached, fake Last.fm, gunicorn); each is stopped after the test."""
    stacks: list[Stack] = []

    def make(**kwargs) -> Stack:
        folder = tmp_path / f"stack-{len(stacks)}"
        folder.mkdir()
        stack = Stack.start(folder, **kwargs)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()

"""Fixtures shared by the ops tests: the pool (three memcached processes, defined in test_pool.py; the fake
Last.fm is tests/conftest.py's), and the wheels and checkout that install.sh installs from in test_install*.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ops.test_install import copy_checkout
from tests.ops.test_pool import pool  # noqa: F401 (a fixture)
from tests.ops.test_pool import pool_processes  # noqa: F401 (a fixture)
from tests.ops.wheelhouse import add_build_backend
from tests.ops.wheelhouse import build_wheelhouse
from tests.support import REPO


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    """Wheels of requirements.txt, for install.sh's offline pip (built once per module)."""
    return add_build_backend(build_wheelhouse(REPO / "requirements.txt", tmp_path_factory.mktemp("wheels")))


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A copy of the repository's files, so the tree cannot change between two runs of the script."""
    return copy_checkout(tmp_path_factory.mktemp("checkout"))

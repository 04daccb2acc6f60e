"""Fixtures shared by the pool tests: three memcached processes and the fake Last.fm (defined in test_pool.py)."""

from __future__ import annotations

from tests.ops.test_pool import lastfm  # noqa: F401 (a fixture)
from tests.ops.test_pool import pool  # noqa: F401 (a fixture)
from tests.ops.test_pool import pool_processes  # noqa: F401 (a fixture)

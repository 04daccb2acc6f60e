"""A real PostgreSQL server for the session, and a fresh database per test."""

from __future__ import annotations

import itertools

import pytest

from tests.postgres import PostgresServer

_names = itertools.count()


@pytest.fixture(scope="session")
def postgres_server():
    """Start one throwaway PostgreSQL for the session; stopped (by PID) and deleted afterwards."""
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The URL (with its password) of a new, empty database on the session's server."""
    return postgres_server.create_database(f"listens_{next(_names)}")

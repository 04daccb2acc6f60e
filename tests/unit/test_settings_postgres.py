"""LISTENS_DATABASE as a PostgreSQL URL: kept as a string, its lock file local, its password never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.settings import DEFAULT_DATABASE
from app.core.settings import load_settings
from app.warm import members_pg


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "PostgreSQL"])
def test_a_postgresql_url_stays_a_url(scheme):
    url = f"{scheme}://listens@db.example.org:5432/listens"
    settings = load_settings({"LISTENS_DATABASE": f" {url} "})
    assert settings.database == url


def test_a_file_path_still_means_sqlite(tmp_path):
    assert load_settings({"LISTENS_DATABASE": str(tmp_path / "m.sqlite3")}).database == tmp_path / "m.sqlite3"
    assert isinstance(load_settings({"LISTENS_DATABASE": "postgresql.sqlite3"}).database, Path)


def test_the_lock_file_of_a_postgresql_database_is_local():
    settings = load_settings({"LISTENS_DATABASE": "postgresql://listens@db/listens"})
    assert settings.lock_path == DEFAULT_DATABASE.with_name(DEFAULT_DATABASE.name + ".lock")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://listens:pa55word@db/listens", "postgresql://listens:***@db/listens"),
        ("postgresql://listens:p%40ss@db/listens", "postgresql://listens:***@db/listens"),
        (
            "postgresql://listens@db/listens?password=pa55word&sslmode=require",
            "postgresql://listens@db/listens?password=***&sslmode=require",
        ),
        ("postgresql://listens@db/listens", "postgresql://listens@db/listens"),
        ("postgresql://listens:pa55word@[db/listens", "postgresql://listens:***@[db/listens"),
    ],
)
def test_redact_hides_the_password(url, shown):
    assert members_pg.redact(url) == shown

"""The `users` command group through the Flask CLI runner, on the test's own database."""

from __future__ import annotations

import dataclasses
from contextlib import closing
from datetime import UTC
from datetime import datetime

import pytest

from app import create_app
from app.warm import members
from tests.support.tracks import make_track

NOW = datetime(2026, 1, 2, 3, 5, 0, tzinfo=UTC)


def invoke(runner, *args: str):
    return runner.invoke(args=["users", *args])


def users_list(runner) -> str:
    result = invoke(runner, "list")
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def populated(runner):
    """Two members, alice (public, Last.fm rj) and bob (private, Last.fm bobfm)."""
    assert invoke(runner, "add", "alice", "--lastfm", "rj").exit_code == 0
    assert invoke(runner, "add", "bob", "--lastfm", "bobfm", "--private").exit_code == 0
    return runner


def assert_one_line_error(result) -> None:
    assert result.exit_code != 0
    assert result.output.startswith("Error: ")
    assert result.output.count("\n") == 1


# -- add -------------------------------------------------------------------------------------


def test_users_add_reports_a_public_member(runner):
    result = invoke(runner, "add", "alice", "--lastfm", "rj")

    assert (result.exit_code, result.output) == (0, "added alice (Last.fm rj, public)\n")


def test_users_add_reports_a_private_member(runner):
    result = invoke(runner, "add", "bob", "--lastfm", "bobfm", "--private")

    assert (result.exit_code, result.output) == (0, "added bob (Last.fm bobfm, private)\n")


def test_users_add_stores_the_member(runner, settings):
    invoke(runner, "add", "bob", "--lastfm", "bobfm", "--private")

    with closing(members.connect(settings.database)) as connection:
        stored = members.list_members(connection)
    assert [(member.username, member.lastfm_username, member.public) for member in stored] == [("bob", "bobfm", False)]


# -- list ------------------------------------------------------------------------------------


def test_users_list_says_how_to_add_when_empty(runner):
    assert users_list(runner) == "no members; add one with 'listens users add NAME --lastfm LASTFM_NAME'\n"


def test_users_list_shows_each_member_on_one_line(populated):
    assert users_list(populated) == "alice\trj\tpublic\tunknown\t-\nbob\tbobfm\tprivate\tunknown\t-\n"


def test_users_list_shows_the_last_known_track(populated, settings):
    with closing(members.connect(settings.database)) as connection:
        alice = next(member for member in members.list_members(connection) if member.username == "alice")
        track = make_track(lastfm_username="rj", fetched_at=NOW)
        members.record_outcomes(connection, [members.FetchOutcome(alice.id, "ok", track)])

    assert users_list(populated).splitlines()[0] == "alice\trj\tpublic\tok\tBjörk - Jóga"


# -- remove ----------------------------------------------------------------------------------


def test_users_remove_removes_the_member(populated):
    result = invoke(populated, "remove", "alice")

    assert result.exit_code == 0
    assert "removed alice" in result.output
    assert users_list(populated) == "bob\tbobfm\tprivate\tunknown\t-\n"


# -- set-visibility -----------------------------------------------------------------------------


def test_users_set_visibility_makes_member_private(populated):
    result = invoke(populated, "set-visibility", "alice", "private")

    assert result.exit_code == 0
    assert result.output.startswith("alice is now private")
    assert users_list(populated).splitlines()[0] == "alice\trj\tprivate\tunknown\t-"


def test_users_set_visibility_makes_member_public(populated):
    result = invoke(populated, "set-visibility", "bob", "public")

    assert result.exit_code == 0
    assert users_list(populated).splitlines()[1] == "bob\tbobfm\tpublic\tunknown\t-"


# -- set-lastfm -----------------------------------------------------------------------------------


def test_users_set_lastfm_links_the_new_account(populated):
    result = invoke(populated, "set-lastfm", "alice", "new_rj")

    assert (result.exit_code, result.output) == (0, "alice is now linked to Last.fm new_rj\n")
    assert users_list(populated).splitlines()[0] == "alice\tnew_rj\tpublic\tunknown\t-"


# -- invalid changes leave the database as it was ------------------------------------------------

INVALID_CHANGES = [
    pytest.param(("add", "_bad", "--lastfm", "free"), "not a valid member name", id="add-bad-name"),
    pytest.param(("add", "a b", "--lastfm", "free"), "not a valid member name", id="add-name-with-space"),
    pytest.param(("add", "x" * 31, "--lastfm", "free"), "not a valid member name", id="add-name-too-long"),
    pytest.param(("add", "carol", "--lastfm", "a.b"), "not a valid Last.fm username", id="add-bad-lastfm"),
    pytest.param(("add", "carol", "--lastfm", "<script>"), "not a valid Last.fm username", id="add-markup-lastfm"),
    pytest.param(("add", "carol", "--lastfm", "x" * 16), "not a valid Last.fm username", id="add-lastfm-too-long"),
    pytest.param(("add", "carol", "--lastfm", ""), "not a valid Last.fm username", id="add-empty-lastfm"),
    pytest.param(("add", "alice", "--lastfm", "free"), "already exists", id="add-duplicate-name"),
    pytest.param(("add", "ALICE", "--lastfm", "free"), "already exists", id="add-duplicate-name-other-case"),
    pytest.param(("add", "carol", "--lastfm", "rj"), "already linked", id="add-duplicate-lastfm"),
    pytest.param(("add", "carol", "--lastfm", "RJ"), "already linked", id="add-duplicate-lastfm-other-case"),
    pytest.param(("remove", "nobody"), "no member named 'nobody'", id="remove-unknown"),
    pytest.param(("set-visibility", "nobody", "private"), "no member named 'nobody'", id="set-visibility-unknown"),
    pytest.param(("set-lastfm", "nobody", "free"), "no member named 'nobody'", id="set-lastfm-unknown"),
    pytest.param(("set-lastfm", "alice", "a b"), "not a valid Last.fm username", id="set-lastfm-bad-name"),
    pytest.param(("set-lastfm", "alice", "bobfm"), "already linked to member 'bob'", id="set-lastfm-duplicate"),
]


@pytest.mark.parametrize(("args", "reason"), INVALID_CHANGES)
def test_users_invalid_change_fails_with_one_line_error(populated, args, reason):
    result = invoke(populated, *args)

    assert_one_line_error(result)
    assert reason in result.output


@pytest.mark.parametrize(("args", "reason"), INVALID_CHANGES)
def test_users_invalid_change_leaves_the_database_unchanged(populated, args, reason):
    before = users_list(populated)

    invoke(populated, *args)

    assert users_list(populated) == before


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("set-visibility", "alice", "hidden"), id="bad-visibility-word"),
        pytest.param(("set-visibility", "alice", "PUBLIC "), id="visibility-with-space"),
        pytest.param(("add", "carol"), id="add-without-lastfm"),
        pytest.param(("set-lastfm", "alice"), id="set-lastfm-without-name"),
    ],
)
def test_users_usage_error_fails_with_one_error_line_and_changes_nothing(populated, args):
    before = users_list(populated)

    result = invoke(populated, *args)

    assert result.exit_code == 2
    assert [line for line in result.output.splitlines() if line.startswith("Error: ")] != []
    assert len([line for line in result.output.splitlines() if "Error" in line]) == 1
    assert users_list(populated) == before


def test_users_command_fails_with_exit_2_when_database_cannot_be_opened(settings, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    database = tmp_path / "file" / "listens.sqlite3"
    runner = create_app(dataclasses.replace(settings, database=database)).test_cli_runner()

    result = invoke(runner, "list")

    assert result.exit_code == 2
    assert_one_line_error(result)
    assert str(database) in result.output

"""Last.fm misbehaving per member, through the real warm script and the fake Last.fm: outcomes, counts, deadline."""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path

from app.warm import members
from tests.support.warmlog import counts_of
from tests.support.warmlog import summary_of

DEADLINE_S = 6
# The summary line is written once every fetch thread returned; a hung request ends at the deadline.
DEADLINE_SLACK_S = 1.5
# Python start-up and imports of the warm script, on a busy two-core machine.
STARTUP_SLACK_S = 4.0
ATTEMPTS = 3  # the first request and LastfmClient's two retries

# member -> (fake Last.fm mode, expected outcome, Last.fm requests this run makes for the member)
# Outcomes: "fetched" (a new track), "no-scrobbles" (fetched, nothing to show), "carried" (a transient
# failure: the last known track stays), "dropped" (gone or private: removed at once).
MATRIX = {
    "steady": ({"mode": "normal"}, "fetched", 1),
    "playing": ({"mode": "now_playing"}, "fetched", 1),
    "sluggish": ({"mode": "slow", "delay_s": 1}, "fetched", 1),
    "flaky": ({"mode": "http", "status": 503, "times": 1}, "fetched", 2),
    "quiet": ({"mode": "empty"}, "no-scrobbles", 1),
    "hangs": ({"mode": "hang", "delay_s": 30}, "carried", 1),
    "err500": ({"mode": "http", "status": 500}, "carried", ATTEMPTS),
    "err502": ({"mode": "http", "status": 502}, "carried", ATTEMPTS),
    "err503": ({"mode": "http", "status": 503}, "carried", ATTEMPTS),
    "limited": ({"mode": "http", "status": 429, "retry_after": 2}, "carried", ATTEMPTS),
    "code29": ({"mode": "error", "code": 29}, "carried", ATTEMPTS),
    "htmlpage": ({"mode": "html"}, "carried", ATTEMPTS),
    "truncated": ({"mode": "truncated"}, "carried", ATTEMPTS),
    "enormous": ({"mode": "huge", "bytes": 5_000_000}, "carried", 1),
    "impostor": ({"mode": "wrong_user"}, "carried", 1),
    "renamed": ({"mode": "error", "code": 6}, "dropped", 1),
    "private": ({"mode": "error", "code": 17}, "dropped", 1),
}
# Joins after the first run: a transient failure with nothing known to carry.
NEWCOMER = ("newcomer", {"mode": "http", "status": 503}, "failed", ATTEMPTS)


def lastfm_statuses(stack) -> dict[str, str]:
    with closing(members.connect(Path(stack.env["LISTENS_DATABASE"]))) as connection:
        return {member.username: member.lastfm_status for member in members.list_members(connection)}


def test_warm_run_gives_each_misbehaving_member_documented_outcome_by_deadline(make_stack):
    stack = make_stack(env={"LISTENS_DEADLINE_SECONDS": str(DEADLINE_S), "LISTENS_ITEMS": "50"}, members=MATRIX)
    # An hour ago everyone answered, so each member has a last known track with a distinct fetchedAt.
    # Last.fm's clock goes back with it: a playedAt ahead of the run's clock is refused.
    stack.lastfm.control("clock", {"now": time.time() - 3600})
    first = stack.paused("an-hour-ago", now_offset_s=-3600).finish()
    stack.lastfm.control("clock", {"now": None})
    assert first.returncode == 0 and first.summary["fetched"] == str(len(MATRIX)), first.stderr
    before = {item["username"]: item for item in stack.api()["data"]}
    stack.add_members(NEWCOMER[0])
    for name, (mode, _, _) in MATRIX.items():
        stack.lastfm.set_user(name, **mode)
    stack.lastfm.set_user(NEWCOMER[0], **NEWCOMER[1])
    requests_before = stack.lastfm.stats()["by_user"]

    started = time.monotonic()
    run = stack.warm()
    elapsed = time.monotonic() - started

    expected = {name: outcome for name, (_, outcome, _) in MATRIX.items()} | {NEWCOMER[0]: NEWCOMER[2]}
    outcomes = list(expected.values())
    summary = summary_of(run.stderr)
    assert run.returncode == 0 and summary["outcome"] == "published", run.stderr
    assert counts_of(summary) == {
        "members": len(expected),
        "fetched": outcomes.count("fetched") + outcomes.count("no-scrobbles"),
        "carried": outcomes.count("carried"),
        "dropped": outcomes.count("dropped"),
        "failed": outcomes.count("carried") + outcomes.count("failed"),
        "tracks": outcomes.count("fetched") + outcomes.count("carried"),
    }
    # The run ends by its deadline, whatever a member's server does.
    assert float(summary["duration_s"]) <= DEADLINE_S + DEADLINE_SLACK_S
    assert elapsed <= DEADLINE_S + DEADLINE_SLACK_S + STARTUP_SLACK_S
    # Retries are bounded, and only for what may pass.
    requests_after = stack.lastfm.stats()["by_user"]
    made = {name: requests_after.get(name, 0) - requests_before.get(name, 0) for name in expected}
    assert made == {name: count for name, (_, _, count) in MATRIX.items()} | {NEWCOMER[0]: NEWCOMER[3]}
    # What visitors see, member by member.
    shown = {item["username"]: item for item in stack.api()["data"]}
    for name, outcome in expected.items():
        if outcome == "fetched":
            assert shown[name]["fetchedAt"] > before[name]["fetchedAt"], name
        elif outcome == "carried":
            kept = (shown[name]["fetchedAt"], shown[name]["track"])
            assert kept == (before[name]["fetchedAt"], before[name]["track"]), name
        else:
            assert name not in shown, name
    statuses = lastfm_statuses(stack)
    assert (statuses["renamed"], statuses["private"]) == ("not_found", "private")


def test_warm_run_exits_2_by_deadline_and_publishes_nothing_when_lastfm_says_key_is_invalid(make_stack):
    stack = make_stack(
        env={"LISTENS_DEADLINE_SECONDS": str(DEADLINE_S)}, members=("steady", "hangs", "refused", "later1", "later2")
    )
    published = int(stack.warm_ok()["generation"])
    stack.lastfm.set_user("hangs", mode="hang", delay_s=30)
    stack.lastfm.set_user("refused", mode="error", code=10)  # "Invalid API key", status 403

    started = time.monotonic()
    run = stack.warm()
    elapsed = time.monotonic() - started

    summary = summary_of(run.stderr)
    assert run.returncode == 2 and summary["outcome"] == "config", run.stderr
    assert "LASTFM_API_KEY" in run.stderr
    assert float(summary["duration_s"]) <= DEADLINE_S + DEADLINE_SLACK_S
    assert elapsed <= DEADLINE_S + DEADLINE_SLACK_S + STARTUP_SLACK_S
    assert stack.pointer().generation == published
    assert stack.api()["generation"] == published

"""A warm run's outcome, exit code and summary line; the typed fetch results and statuses."""

from __future__ import annotations

import re
from datetime import UTC
from datetime import datetime

import pytest

from app.cli import ConfigError
from app.core.exits import EXIT_CONFIG
from app.core.exits import EXIT_FAILED
from app.core.exits import EXIT_OK
from app.core.settings import SettingsError
from app.warm import job as module
from app.warm import metrics
from app.warm.job import Outcome
from app.warm.job import RunResult
from app.warm.members import FetchOutcome
from app.warm.members import FetchStatus
from tests.support import REPO

GENERATION = 1796110005683363


def design_exit_codes() -> dict[str, int]:
    """Return outcome -> exit code as the table under docs/design.md's "Exit codes" heading says."""
    text = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    codes = {}
    for row in re.findall(r"^\| ([0-9]) \| ([^|]+) \|", section, re.MULTILINE):
        for outcome in re.findall(r"`([a-z]+)`", row[1]):
            codes[outcome] = int(row[0])
    return codes


def make_result(outcome: Outcome = Outcome.FAILED, **counts) -> RunResult:
    return RunResult(outcome, outcome.exit_code, GENERATION, **counts)


# -- outcomes and exit codes -----------------------------------------------------------------------


def test_outcome_exit_codes_are_the_design_tables():
    assert {outcome.value: outcome.exit_code for outcome in Outcome} == design_exit_codes()


def test_outcome_names_are_the_metrics_outcome_labels():
    assert tuple(Outcome) == metrics.OUTCOMES


@pytest.mark.parametrize("outcome", list(Outcome))
def test_outcome_compares_and_prints_as_its_name(outcome):
    assert (outcome == outcome.value, f"{outcome}", Outcome(outcome.value)) == (True, outcome.value, outcome)


def test_configuration_errors_exit_with_the_one_config_code():
    codes = (SettingsError.exit_code, ConfigError.exit_code, Outcome.CONFIG.exit_code, module.EXIT_CONFIG)

    assert codes == (EXIT_CONFIG,) * 4


# -- RunResult.end and the database special case ---------------------------------------------------------


@pytest.mark.parametrize("outcome", list(Outcome))
def test_run_result_end_sets_the_outcomes_exit_code_and_keeps_the_error_unless_given(outcome):
    result = make_result(error="earlier")

    result.end(outcome)

    assert (result.outcome, result.exit_code, result.error, result.db) == (outcome, outcome.exit_code, "earlier", "")


def test_run_result_end_records_error_and_database_kind():
    result = make_result()

    result.end(Outcome.CONFIG, error="cannot open", db="readonly")

    assert (result.outcome, result.exit_code, result.error, result.db) == ("config", 2, "cannot open", "readonly")


@pytest.mark.parametrize(
    ("outcome", "db", "exit_code"),
    [
        (Outcome.PUBLISHED, "busy", EXIT_FAILED),
        (Outcome.SUPERSEDED, "full", EXIT_FAILED),
        (Outcome.PUBLISHED, "", EXIT_OK),
        (Outcome.FAILED, "busy", EXIT_FAILED),
        (Outcome.CONFIG, "readonly", EXIT_CONFIG),
    ],
)
def test_run_result_fails_an_exit_0_only_when_the_database_missed_the_run(outcome, db, exit_code):
    result = make_result()
    result.end(outcome, db=db)

    result.fail_if_database_missed()

    assert (result.outcome, result.exit_code) == (outcome, exit_code)


def test_run_result_summary_line_keeps_its_words_and_order():
    result = make_result(members=15, fetched=13, dropped=2, tracks=12, duration_s=2.8071)
    result.end(Outcome.PUBLISHED)
    result.db = "busy"
    result.fail_if_database_missed()

    assert result.summary() == (
        f"warm outcome=published db=busy generation={GENERATION} members=15 fetched=13 carried=0 dropped=2"
        " failed=0 deferred=0 tracks=12 duration_s=2.807 exit=1"
    )


def test_run_result_summary_line_quotes_the_error():
    result = make_result()
    result.end(Outcome.ERROR, error="KeyError")

    assert result.summary().endswith(' exit=1 error="KeyError"')


# -- typed fetch results and statuses ----------------------------------------------------------------------


def test_no_scrobbles_is_neither_a_track_nor_an_error():
    assert isinstance(module.NO_SCROBBLES, module.NoScrobbles)
    assert module.NO_SCROBBLES == module.NoScrobbles()
    assert not isinstance(module.NO_SCROBBLES, (str, module.Track, module.LastfmError))


@pytest.mark.parametrize("status", list(FetchStatus))
def test_fetch_outcome_takes_the_stored_spelling_of_a_status(status):
    outcome = FetchOutcome(1, status.value, None, datetime(2026, 1, 2, tzinfo=UTC))

    assert outcome.status is status


def test_fetch_outcome_refuses_an_unknown_status():
    with pytest.raises(ValueError, match="'gone'"):
        FetchOutcome(1, "gone", None)

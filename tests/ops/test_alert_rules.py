"""deploy/prometheus: the alert rules pass promtool's checks and its unit tests, and every alert is tested."""

from __future__ import annotations

import re
import shutil
import subprocess

import yaml

from tests.support import REPO
from tests.support.processes import required_tool

RULES_DIR = REPO / "deploy" / "prometheus"
RULES = RULES_DIR / "listens-rules.yml"
RULE_TESTS = RULES_DIR / "listens-rules.test.yml"
# The modules whose metrics the rules may use: the web's /metrics and the warm job's textfile.
EXPORTERS = (REPO / "app" / "web" / "metrics.py", REPO / "app" / "warm" / "metrics.py")


def promtool(*arguments: str, cwd=RULES_DIR) -> subprocess.CompletedProcess:
    """Run promtool; fail the test (never skip) when it is missing."""
    path = required_tool("promtool", "prometheus")
    return subprocess.run([path, *arguments], cwd=cwd, capture_output=True, text=True, timeout=120)


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_rules_pass_promtool_check():
    result = promtool("check", "rules", str(RULES))

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_rules_pass_their_promtool_unit_tests():
    result = promtool("test", "rules", RULE_TESTS.name)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_unit_tests_fail_when_an_alert_fires_too_early(tmp_path):
    # The tests above mean something only if a wrong duration breaks them.
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    (tmp_path / RULES.name).write_text(RULES.read_text().replace("for: 15m", "for: 5m", 1))

    result = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)

    assert result.returncode != 0
    assert "ListensPageStale" in result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_not_firing():
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    checks = [check for test in tests for check in test["alert_rule_test"]]

    for rule in alert_rules():
        mine = [check for check in checks if check["alertname"] == rule["alert"]]
        assert any(check.get("exp_alerts") for check in mine), f"{rule['alert']} is never expected to fire"
        assert any(not check.get("exp_alerts") for check in mine), f"{rule['alert']} is never expected to stay quiet"


def test_every_summary_names_the_first_command_to_run():
    for rule in alert_rules():
        summary = rule["annotations"]["summary"]
        assert re.search(r"`(listens listens status|journalctl [^`]*-u listens-warm)`", summary), rule["alert"]


def test_rules_use_only_metrics_the_code_exports():
    exported = "".join(path.read_text() for path in EXPORTERS)
    used = {name for rule in alert_rules() for name in re.findall(r"\blistens_\w+", rule["expr"])}

    assert used
    for name in used:
        assert f'"{name}"' in exported, f"{name} is used by a rule but exported by neither module"

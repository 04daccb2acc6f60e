"""Hostile input, round two: a dripping Last.fm, a refused key, a busy or full database, a relinked
account, a poisoned render, through the real warm script, gunicorn, memcached and the fake Last.fm.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.faults.helpers import summary_of
from tests.support import REPO
from tests.support import service_env

pytestmark = pytest.mark.faults

# The run's process must exit within its deadline plus this much, whatever Last.fm does
# (systemd's TimeoutStartSec is far above; deploy/systemd/listens-warm.service).
EXIT_BOUND_S = 5.0


def timed(command: list[str], env) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    finished = subprocess.run(command, cwd=REPO, env=service_env(env), capture_output=True, text=True, timeout=120)
    return finished, time.monotonic() - started


WARM_SCRIPT = [sys.executable, "scripts/warm_listens.py"]
LISTENS_WARM = [sys.executable, "-m", "flask", "--app", "app", "listens", "warm"]


@pytest.mark.parametrize("mode", ["drip", "drip_headers"])
@pytest.mark.parametrize("command", [WARM_SCRIPT, LISTENS_WARM], ids=["warm-script", "listens-warm"])
def test_run_against_dripping_lastfm_exits_within_deadline_plus_5_s(mode, command, make_stack):
    deadline_s = 8
    stack = make_stack(web=False, env={"LISTENS_DEADLINE_SECONDS": str(deadline_s)})
    stack.add_members("steady", "dripper")
    stack.lastfm.set_user("dripper", mode=mode, delay_s=1)

    run, elapsed = timed(command, stack.env)

    summary = summary_of(run.stderr)
    assert summary["outcome"] == "published" and run.returncode == 0, run.stderr
    assert summary["fetched"] == "1" and summary["failed"] == "1", run.stderr
    assert elapsed <= deadline_s + EXIT_BOUND_S, f"the process took {elapsed:.1f} s\n{run.stderr}"
    assert float(summary["duration_s"]) <= deadline_s + 1.5
    assert stack.pointer().generation == int(summary["generation"])


def test_refused_key_ends_run_within_5_s_while_another_member_hangs(make_stack):
    stack = make_stack(web=False, env={"LISTENS_DEADLINE_SECONDS": "60"})
    stack.add_members("steady", "hangs", "refused", "later1", "later2")
    published = int(stack.warm_ok()["generation"])
    stack.lastfm.set_user("hangs", mode="hang", delay_s=120)
    stack.lastfm.set_user("refused", mode="error", code=26)  # "Suspended API key", status 403

    run, elapsed = timed(WARM_SCRIPT, stack.env)

    summary = summary_of(run.stderr)
    assert run.returncode == 2 and summary["outcome"] == "config", run.stderr
    assert "LASTFM_API_KEY" in run.stderr
    assert elapsed <= 5.0, f"the process took {elapsed:.1f} s\n{run.stderr}"
    assert stack.pointer().generation == published

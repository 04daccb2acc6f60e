"""Run one warm cycle in its own process, pausing at chosen protocol steps until the test releases it.

Usage: python -m tests.support.warm_runner --control DIR [--pause-at STEP ...] [--now-offset SECONDS]

At the first occurrence of each STEP (job.run's checkpoints: "fetched",
"snapshot-written", "read-back", "pointer-read", "pointer-swapped") it writes
DIR/STEP.reached holding the run's generation, then waits for DIR/STEP.go
(written by the test) before going on. A run never released within
RELEASE_TIMEOUT_S exits 3, so a broken test cannot leave it hanging.
--now-offset starts the run that many seconds from now (negative: in the past),
which fixes its generation and every fetch time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path

from app.core.settings import SettingsError
from app.core.settings import load_settings
from app.warm import job

RELEASE_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.005
EXIT_NOT_RELEASED = 3


def make_checkpoint(control: Path, pause_at: set[str]):
    """Return a checkpoint that pauses at the first occurrence of each step in pause_at."""
    seen: set[str] = set()

    def checkpoint(step: str) -> None:
        if step not in pause_at or step in seen:
            return
        seen.add(step)
        (control / f"{step}.reached").write_text(job.current_generation.get())
        released = control / f"{step}.go"
        deadline = time.monotonic() + RELEASE_TIMEOUT_S
        while not released.exists():
            if time.monotonic() > deadline:
                sys.stderr.write(f"warm_runner: not released at {step} within {RELEASE_TIMEOUT_S:g} s\n")
                sys.stderr.flush()
                os._exit(EXIT_NOT_RELEASED)
            time.sleep(POLL_INTERVAL_S)

    return checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warm_runner")
    parser.add_argument("--control", type=Path, required=True)
    parser.add_argument("--pause-at", action="append", default=[])
    parser.add_argument("--now-offset", type=float, default=None)
    arguments = parser.parse_args(argv)
    job.configure_logging()
    try:
        settings = load_settings()
        settings.require_lastfm_key()
    except SettingsError as error:
        job.logger.error("%s", error)
        return job.EXIT_CONFIG
    now = None
    if arguments.now_offset is not None:
        now = datetime.now(UTC) + timedelta(seconds=arguments.now_offset)
    checkpoint = make_checkpoint(arguments.control, set(arguments.pause_at))
    return job.run(settings, now=now, checkpoint=checkpoint).exit_code


if __name__ == "__main__":
    sys.exit(main())

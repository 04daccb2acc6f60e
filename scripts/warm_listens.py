#!/usr/bin/env python3
"""Run one warm cycle: what the systemd timer starts every 5 minutes.

Exit 0: published, superseded, or another run in progress; 1: the run
failed; 2: bad configuration. All logic lives in app.warm.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run from a checkout without the package installed; installed, `listens-warm` is the same.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.warm import job  # noqa: E402

if __name__ == "__main__":
    sys.exit(job.console_main())

"""The warm job's summary line, as tests read it: `warm outcome=... exit=...` parsed into its pairs.

The warm run logs exactly one such INFO line (docs/design.md, Publish);
the line is also stored as the last run's summary in the members database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from collections.abc import Mapping

MARKER = "warm outcome="
COUNTS = ("members", "fetched", "carried", "dropped", "failed", "tracks")


def parse_summary(line: str) -> dict[str, str]:
    """Return the key=value pairs of one summary line (quoted values keep their quotes).

    Anything before `warm outcome=` (the log line's level, logger and
    generation) is left out.
    """
    assert MARKER in line, line
    return dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line[line.index(MARKER) :]))


def summary_of(lines: str | Iterable[str]) -> dict[str, str]:
    """Return the pairs of the one summary line among lines (a run's stderr, or its lines)."""
    lines = lines.splitlines() if isinstance(lines, str) else list(lines)
    found = [line for line in lines if MARKER in line]
    assert len(found) == 1, "\n".join(lines)
    return parse_summary(found[0])


def counts_of(summary: Mapping[str, str]) -> dict[str, int]:
    """Return the member and track counts of a parsed summary, as numbers."""
    return {name: int(summary[name]) for name in COUNTS}

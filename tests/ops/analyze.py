"""Offline checks of the systemd units with systemd-analyze, in a throwaway root.

systemd-analyze verify and security work on files alone (no running systemd
is needed), given --root: a directory laid out like the target machine.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.support import REPO
from tests.support.processes import required_tool

UNIT_DIR = REPO / "deploy" / "systemd"
SERVICES = ("listens-web.service", "listens-warm.service", "listens-alert@.service")
UNITS = ("listens-web.service", "listens-warm.service", "listens-warm.timer", "listens-alert@.service")
# The programs the units name that the operating system provides (ExecReload=
# and the alert's ExecStart=); install.sh provides the rest.
OS_PROGRAMS = ("usr/bin/kill", "usr/bin/logger")
# What install.sh puts under /opt/listens that the units run.
APP_PROGRAMS = (
    "opt/listens/app/venv/bin/gunicorn",
    "opt/listens/app/venv/bin/listens-warm",
)
MAX_EXPOSURE = 2.0

_EXPOSURE = re.compile(r"Overall exposure level for (\S+): (\d+\.\d+)")


def systemd_analyze() -> str:
    """Return the path of systemd-analyze; fail the test (never skip) when it is missing."""
    return required_tool("systemd-analyze", "systemd", ". It checks unit files offline; no running systemd is needed.")


def prepare_os_root(root: Path) -> Path:
    """Lay out in root what the units need from the operating system: systemd's units, kill and logger."""
    (root / "usr" / "lib" / "systemd").mkdir(parents=True, exist_ok=True)
    system_units = root / "usr" / "lib" / "systemd" / "system"
    shutil.copytree("/usr/lib/systemd/system", system_units, symlinks=True, dirs_exist_ok=True)
    (root / "usr" / "bin").mkdir(parents=True, exist_ok=True)
    if not (root / "bin").is_symlink():
        (root / "bin").symlink_to("usr/bin")
    for program in OS_PROGRAMS:
        stub(root / program)
    (root / "etc" / "systemd" / "system").mkdir(parents=True, exist_ok=True)
    return root


def stub(path: Path) -> None:
    """Create an empty executable at path: verify only checks that a program exists and is executable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    path.chmod(0o755)


def install_units(root: Path) -> None:
    for unit in UNIT_DIR.iterdir():
        shutil.copyfile(unit, root / "etc" / "systemd" / "system" / unit.name)


def verify(root: Path, *units: str) -> subprocess.CompletedProcess:
    """Run systemd-analyze verify on units in root; with --recursive-errors=yes any warning fails."""
    return subprocess.run(
        [systemd_analyze(), "verify", f"--root={root}", "--recursive-errors=yes", "--man=no", *units],
        capture_output=True,
        text=True,
        timeout=60,
    )


def security(root: Path, unit: str) -> tuple[float, subprocess.CompletedProcess]:
    """Run systemd-analyze security offline on unit; return its overall exposure and the process."""
    process = subprocess.run(
        [
            systemd_analyze(),
            "security",
            "--offline=true",
            f"--root={root}",
            # exposure x 10: 20 is 2.0
            f"--threshold={int(MAX_EXPOSURE * 10)}",
            unit,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = _EXPOSURE.search(process.stdout)
    assert match is not None, f"no exposure level in:\n{process.stdout}\n{process.stderr}"
    return float(match.group(2)), process


def parse_unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Return a unit file's sections as lists of (key, value), repeated keys kept in order."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"{path.name}: continuation lines are not parsed here: {line!r}"
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, separator, value = line.partition("=")
        assert separator and current is not None, f"{path.name}: not key=value: {line!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    return [value for name, value in unit.get(section, []) if name == key]


def value(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str | None:
    """Return the value that counts for key: the last one, as systemd reads it."""
    found = values(unit, section, key)
    return found[-1] if found else None


def seconds(text: str) -> float:
    """Parse a systemd time span such as 300, 1s, 5min or 1min 30s into seconds."""
    units = {"": 1, "s": 1, "sec": 1, "ms": 0.001, "min": 60, "m": 60, "h": 3600, "hr": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text):
        total += float(number) * units[unit]
    return total

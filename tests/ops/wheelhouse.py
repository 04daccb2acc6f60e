"""Rebuild wheels of the installed requirements, so install.sh's pip runs offline in a test.

install.sh creates a real virtualenv and runs a real `pip install -r
requirements.txt`; pointed with `--no-index --find-links` at these wheels it
needs no network and takes about a second. Each wheel is packed from the
files the distribution recorded when it was installed in the interpreter
running the tests (the same Python, so the same tags fit), with a fresh RECORD.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import re
import zipfile
from pathlib import Path

# Files pip writes at install time; a wheel does not carry them.
_INSTALL_ONLY = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")


def pinned_requirements(path: Path) -> list[tuple[str, str]]:
    """Return (name, version) for each name==version line of a requirements file."""
    pins = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, separator, version = line.partition("==")
            assert separator, f"{path.name}: {line!r} is not pinned with =="
            pins.append((name.strip(), version.strip()))
    return pins


def build_wheelhouse(requirements: Path, target: Path) -> Path:
    """Write a wheel into target for every requirement pinned in requirements, from the installed copy."""
    for name, version in pinned_requirements(requirements):
        distribution = importlib.metadata.distribution(name)
        installed = distribution.version
        assert installed == version, f"{name} {installed} is installed, {requirements.name} pins {version}"
        repack(distribution, target)
    return target


def repack(distribution: importlib.metadata.Distribution, target: Path) -> Path:
    wheel_info = distribution.read_text("WHEEL") or ""
    tags = [line.split(":", 1)[1].strip() for line in wheel_info.splitlines() if line.startswith("Tag:")]
    assert tags, f"{distribution.metadata['Name']} has no wheel tags"
    name = re.sub(r"[-_.]+", "_", distribution.metadata["Name"])
    path = target / f"{name}-{distribution.version}-{tags[0]}.whl"
    record_name = None
    lines = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in distribution.files:
            text = file.as_posix()
            # The distribution's own metadata, not a vendored copy's (setuptools/_vendor/*.dist-info).
            own_metadata = len(file.parts) == 2 and file.parts[0].endswith(".dist-info")
            if own_metadata and file.name == "RECORD":
                record_name = text
            # Console scripts live outside site-packages (../../../bin); pip
            # writes them again from entry_points.txt.
            install_only = own_metadata and file.name in _INSTALL_ONLY
            if text.startswith("..") or "__pycache__" in file.parts or install_only:
                continue
            data = Path(distribution.locate_file(file)).read_bytes()
            archive.writestr(text, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
            lines.append(f"{text},sha256={digest},{len(data)}")
        assert record_name is not None, f"{distribution.metadata['Name']} has no RECORD"
        archive.writestr(record_name, "\n".join([*lines, f"{record_name},,"]) + "\n")
    return path


def add_build_backend(target: Path) -> Path:
    """Add the setuptools that pyproject.toml builds with, so `pip install .` and wheel builds run offline too."""
    repack(importlib.metadata.distribution("setuptools"), target)
    return target

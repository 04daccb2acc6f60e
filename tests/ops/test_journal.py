"""journald priorities: the <N> prefix of every log line of the warm job and gunicorn, only towards the journal.

journald reads the prefix as the entry's priority and strips it, so
`journalctl -p warning` selects exactly the lines whose prefix is 0-4. No
journald runs here: systemd tells a service which stream is the journal with
JOURNAL_STREAM=<device>:<inode>, so the tests send the output to a file and
name that file's device and inode, then read the lines as journald would.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from app.core import logs
from app.core.snapshot import pointer_key
from tests.support import REPO
from tests.support import WARM_SCRIPT
from tests.support import FakeLastfm
from tests.support import Gunicorn
from tests.support import add_members
from tests.support import free_port
from tests.support import service_env
from tests.support import stack_env
from tests.support.memcached import cache_set
from tests.support.processes import run_python
from tests.support.warmlog import summary_of

PRIORITY_OF_LEVEL = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}
JOURNAL_LINE = re.compile(r"^<(\d)>level=(\w+) logger=\S+ ")
# journalctl -p warning: emerg (0) to warning (4).
WARNING_OR_WORSE = 4


def journal_stream_of(path: Path) -> str:
    """Return the JOURNAL_STREAM value naming path, as systemd names its stream socket."""
    status = os.stat(path)
    return f"{status.st_dev}:{status.st_ino}"


def journal_entries(lines: list[str]) -> list[tuple[int, str]]:
    """Read lines as journald does: (priority, text without the prefix); every line must carry one."""
    entries = []
    for line in lines:
        match = JOURNAL_LINE.match(line)
        assert match, f"no priority prefix: {line!r}"
        assert int(match.group(1)) == PRIORITY_OF_LEVEL[match.group(2)], line
        entries.append((int(match.group(1)), line[len(f"<{match.group(1)}>") :]))
    return entries


def selected_by_p_warning(entries: list[tuple[int, str]]) -> list[str]:
    return [text for priority, text in entries if priority <= WARNING_OR_WORSE]


@pytest.mark.parametrize(
    ("level", "prefix"),
    [
        (logging.DEBUG, "<7>"),
        (logging.INFO, "<6>"),
        (logging.WARNING, "<4>"),
        (logging.ERROR, "<3>"),
        (logging.CRITICAL, "<2>"),
    ],
)
def test_journal_handler_prefixes_the_priority_of_the_level(tmp_path, level, prefix):
    path = tmp_path / "journal"
    path.touch()
    with open(path, "a") as stream:
        handler = logs.JournalHandler(stream, journal_stream=journal_stream_of(path))
        handler.setFormatter(logs.OneLineFormatter("level=%(levelname)s %(message)s"))
        handler.emit(logging.LogRecord("app", level, __file__, 1, "two\nlines", None, None))

    assert path.read_text() == f"{prefix}level={logging.getLevelName(level)} two\\nlines\n"


@pytest.mark.parametrize("journal_stream", [None, "", "garbage", "1:2:3", "0:0"])
def test_journal_handler_adds_no_prefix_unless_its_stream_is_the_named_one(tmp_path, journal_stream):
    path = tmp_path / "not-the-journal"
    with open(path, "w") as stream:
        handler = logs.JournalHandler(stream, journal_stream=journal_stream or "")
        handler.emit(logging.LogRecord("app", logging.ERROR, __file__, 1, "failed", None, None))

    assert path.read_text() == "failed\n"


def test_journal_handler_adds_no_prefix_on_a_stream_without_a_file_descriptor(tmp_path):
    stream = io.StringIO()
    handler = logs.JournalHandler(stream, journal_stream="1:1")
    handler.emit(logging.LogRecord("app", logging.WARNING, __file__, 1, "careful", None, None))

    assert stream.getvalue() == "careful\n"


def run_warm_to(path: Path, env: dict[str, str], journal_stream: str | None) -> int:
    """Run the warm script with stderr appended to path, as systemd would connect it to the journal."""
    environment = service_env(env)
    environment.pop("JOURNAL_STREAM", None)
    if journal_stream is not None:
        environment["JOURNAL_STREAM"] = journal_stream
    with open(path, "ab") as stderr:
        return subprocess.run(
            [sys.executable, str(WARM_SCRIPT)], cwd=REPO, env=environment, stderr=stderr, timeout=120
        ).returncode


def test_journalctl_p_warning_finds_a_failed_warm_run_and_nothing_of_a_good_one(tmp_path, memcached):
    database = tmp_path / "listens.sqlite3"
    add_members(database, ["alice", "bob"])
    journal = tmp_path / "journal"
    journal.touch()
    lastfm = FakeLastfm().start()
    try:
        good = run_warm_to(journal, stack_env(memcached.address, lastfm.url, database), journal_stream_of(journal))
    finally:
        lastfm.stop()
    good_lines = journal.read_text().splitlines()
    # Nothing answers on this port: every fetch fails, nothing is published.
    dead_lastfm = f"http://127.0.0.1:{free_port()}/2.0/"
    failed = run_warm_to(journal, stack_env(memcached.address, dead_lastfm, database), journal_stream_of(journal))
    failed_lines = journal.read_text().splitlines()[len(good_lines) :]

    assert good == 0 and failed == 1
    assert selected_by_p_warning(journal_entries(good_lines)) == []
    entries = journal_entries(failed_lines)
    generation = summary_of(text for _, text in entries)["generation"]
    selected = selected_by_p_warning(entries)
    errors = [text for text in selected if text.startswith("level=ERROR ")]
    assert errors and all(f" generation={generation} " in text for text in selected)
    assert any("no member could be fetched from Last.fm" in text for text in errors)


def test_warm_lines_carry_no_prefix_when_stderr_is_not_the_journal(tmp_path, memcached):
    database = tmp_path / "listens.sqlite3"
    add_members(database, ["alice"])
    log = tmp_path / "terminal"
    other = tmp_path / "elsewhere"
    other.touch()
    dead_lastfm = f"http://127.0.0.1:{free_port()}/2.0/"

    # JOURNAL_STREAM inherited from a parent whose journal is another stream.
    code = run_warm_to(log, stack_env(memcached.address, dead_lastfm, database), journal_stream_of(other))

    lines = log.read_text().splitlines()
    assert code == 1 and lines
    assert all(line.startswith("level=") for line in lines), lines


def test_gunicorn_and_app_lines_carry_the_priority_of_their_level(tmp_path, memcached):
    # An invalid pointer makes app.reader log a WARNING from a worker.
    cache_set(memcached.address, pointer_key("user-listens"), b"abc")
    log = tmp_path / "journal"
    log.touch()
    env = {
        "LISTENS_MEMCACHED": memcached.address,
        "LISTENS_DATABASE": str(tmp_path / "listens.sqlite3"),
        "JOURNAL_STREAM": journal_stream_of(log),
    }
    # Gunicorn sends stdout and stderr to the one file, as systemd sends both to the journal.
    web = Gunicorn(env, workers=1).start(log)
    try:
        assert requests.get(web.url + "/", timeout=5).status_code == 200
    finally:
        web.stop()

    entries = journal_entries(log.read_text().splitlines())
    selected = selected_by_p_warning(entries)
    assert any(text.startswith("level=WARNING logger=app.reader ") for text in selected)
    assert all(" logger=gunicorn.access " not in text for text in selected)
    assert any(priority == 6 and " logger=gunicorn.access " in text for priority, text in entries)
    assert any(priority == 6 and " logger=gunicorn.error " in text for priority, text in entries)


def test_gunicorn_conf_loads_the_shared_handler_without_importing_the_app(tmp_path):
    # The master must not hold the app's modules: a HUP gives the workers the new release.
    code = (
        "import runpy, sys\n"
        f"conf = runpy.run_path({str(REPO / 'deploy' / 'gunicorn.conf.py')!r})\n"
        "handler = conf['logconfig_dict']['handlers']['stderr']['()']\n"
        "print(handler.__name__, sorted(name for name in sys.modules if name == 'app' or name.startswith('app.')))\n"
    )
    result = run_python(code, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "JournalHandler []"

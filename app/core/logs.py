"""Log lines for journald: one line per event, with its priority prefix when the stream is the journal.

It owns how the warm job and gunicorn (the app's and gunicorn's loggers)
write their lines, and it must never import the rest of the app:
deploy/gunicorn.conf.py loads this file by its path, so that gunicorn's
master never imports the app package and a HUP still gives the workers the
new release's code.
"""

from __future__ import annotations

import logging
import os

# sd-daemon(3): a line that starts with <N> gets priority N in the journal,
# which strips the prefix. journalctl -p warning shows 0-4.
PRIORITY_ERROR = 3
PRIORITY_WARNING = 4
PRIORITY_INFO = 6
PRIORITY_DEBUG = 7
PRIORITY_CRITICAL = 2


def priority(levelno: int) -> int:
    """Return the syslog priority of a logging level (CRITICAL 2, ERROR 3, WARNING 4, INFO 6, DEBUG 7)."""
    if levelno >= logging.CRITICAL:
        return PRIORITY_CRITICAL
    if levelno >= logging.ERROR:
        return PRIORITY_ERROR
    if levelno >= logging.WARNING:
        return PRIORITY_WARNING
    if levelno >= logging.INFO:
        return PRIORITY_INFO
    return PRIORITY_DEBUG


def stream_is_journal(stream, journal_stream: str | None) -> bool:
    """Return whether stream is the journal stream that systemd names in JOURNAL_STREAM.

    systemd sets JOURNAL_STREAM=<device>:<inode> of the stream socket it gave
    a service as stdout or stderr (systemd.exec(5)). The variable is
    inherited by children whose output goes elsewhere, so the stream itself is
    compared: a terminal, a pipe or a log file never matches.
    """
    if not journal_stream:
        return False
    try:
        device, inode = (int(part, 10) for part in journal_stream.split(":"))
        status = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        # Not device:inode, or a stream without a file descriptor (a test's StringIO).
        return False
    return (status.st_dev, status.st_ino) == (device, inode)


class OneLineFormatter(logging.Formatter):
    """Format a record on one line: a traceback's line breaks become a literal \\n.

    journald makes one entry per line it reads, so a multi-line traceback would
    turn into dozens of entries that no longer say which event they belong to.
    """

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "\\r").replace("\n", "\\n")


class JournalHandler(logging.StreamHandler):
    """A StreamHandler that starts each line with the record's <priority> when its stream is the journal."""

    def __init__(self, stream=None, journal_stream: str | None = None) -> None:
        super().__init__(stream)
        # The process environment that systemd hands over, like NOTIFY_SOCKET:
        # where stdout and stderr go, not a setting of ours.
        if journal_stream is None:
            journal_stream = os.environ.get("JOURNAL_STREAM")
        self.to_journal = stream_is_journal(self.stream, journal_stream)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        return f"<{priority(record.levelno)}>{line}" if self.to_journal else line

"""gunicorn settings for the listens web app (read-only; docs/design.md, Processes).

systemd starts gunicorn with ``--config`` pointing here; anything that differs
between hosts is an environment variable, not an edit to this file.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

wsgi_app = "app:create_app()"

# Import the app from the directory above this file, by its unresolved path
# (/opt/listens/app, a symlink to the current release), so that a HUP after
# the symlink moves loads the new release. gunicorn's default is the resolved
# working directory, which would keep serving the old release.
chdir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def post_fork(server, worker):
    """Import the app from the current release's own virtualenv (deploy/install.sh).

    The arbiter runs the interpreter of the release it was started from, and a
    HUP forks the new workers from it. So each worker puts the site-packages of
    the release /opt/listens/app points at now first on its path, before it
    imports the app: the new code with the dependencies that release pinned.
    From a checkout there is no venv/ beside deploy/, and nothing changes.
    """
    release = os.path.realpath(chdir)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = os.path.join(release, "venv", "lib", version, "site-packages")
    if os.path.isdir(site):
        if site not in sys.path:
            sys.path.insert(0, site)
            importlib.invalidate_caches()
    elif os.path.isdir(os.path.join(release, "venv")):
        server.log.warning("%s/venv has no %s; restart listens-web to run its interpreter", release, version)


# Loopback only: nginx in front terminates TLS and talks to us here. Set
# explicitly, because gunicorn's default turns into 0.0.0.0:$PORT when a PORT
# variable happens to be set.
bind = os.environ.get("LISTENS_BIND", "127.0.0.1:8000")

# Sync workers: a request costs one small memcached get, so two processes are
# plenty, and a hung worker is killed after `timeout` instead of stalling a
# thread pool. Named LISTENS_WORKERS so a stray WEB_CONCURRENCY is not used.
worker_class = "sync"
workers = int(os.environ.get("LISTENS_WORKERS", "2"))

# gunicorn's defaults, pinned: the reader bounds each memcached call to a few
# hundred milliseconds, so a request still running at 30 s is a bug; kill it.
timeout = 30
graceful_timeout = 30

# Ignored by sync workers, which close the connection after each response;
# it applies only if worker_class ever becomes gthread.
keepalive = 5

# Recycle each worker after ~10000 requests (jittered so both never restart
# at once), capping slow leaks in C extensions such as the memcached client.
max_requests = 10000
max_requests_jitter = 1000

# Access and error logs on stdout/stderr, where systemd sends them to journald.
accesslog = "-"
errorlog = "-"


class OneLineFormatter(logging.Formatter):
    """Format a record on one line: a traceback's line breaks become a literal \\n.

    journald makes one entry per line it reads, so a multi-line traceback would
    turn into dozens of entries that no longer say which event they belong to.
    """

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "\\r").replace("\n", "\\n")


# One key=value line per event, like the warm job's (app/warm.py); journald
# adds the time, so the line does not. Without this, the app's own warnings
# (app.reader: an invalid snapshot, memcached unavailable) reach stderr through
# Python's last-resort handler as a bare message, without level or logger.
# The access log becomes key=value too; gunicorn escapes quotes inside values.
_LINE = "level=%(levelname)s logger=%(name)s pid=%(process)d %(message)s"
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"line": {"()": OneLineFormatter, "fmt": _LINE}},
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stderr"},
        "stdout": {"class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stdout"},
    },
    # The app's loggers (app.reader, app.cache, Flask's "app") propagate here.
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["stdout"], "propagate": False},
    },
}
access_log_format = (
    'remote=%(h)s forwarded_for="%({x-forwarded-for}i)s" method=%(m)s path="%(U)s" query="%(q)s"'
    ' status=%(s)s bytes=%(B)s duration_ms=%(M)s agent="%(a)s"'
)

# gunicorn 25.1+ opens a gunicornc control socket in $XDG_RUNTIME_DIR or
# ~/.gunicorn/ by default. We manage the server with systemctl (HUP to
# reload), the home directory is read-only under ProtectSystem=strict, and an
# unused admin socket is attack surface: switch it off.
control_socket_disable = True

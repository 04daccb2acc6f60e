"""gunicorn settings for the listens web app (read-only; docs/design.md, Processes).

systemd starts gunicorn with ``--config`` pointing here; anything that differs
between hosts is an environment variable, not an edit to this file.
"""

from __future__ import annotations

import importlib
import importlib.util
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

# Trust no client with the WSGI environment: gunicorn takes SCRIPT_NAME and
# PATH_INFO request headers from forwarded_allow_ips (loopback by default) as
# set by a proxy, so any process on the host could send "SCRIPT_NAME: /x" and
# have the page rendered with /x/static/... links, which the render memo then
# served to every visitor. The site lives at "/" and nginx sets neither, so
# no header may set them; with header_map "drop" they are dropped. X-Forwarded-*
# from nginx on loopback stays trusted (forwarded_allow_ips is unchanged).
forwarder_headers = ""

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


def _load_logs():
    """Load app/core/logs.py by its path, without importing the app package in gunicorn's master.

    A master that imported the app would fork workers with the old release's
    modules after a HUP; the workers import the app themselves.
    """
    path = os.path.join(chdir, "app", "core", "logs.py")
    if not os.path.exists(path):
        # An installed release: the package is in its virtualenv, not beside
        # deploy/. find_spec of a top-level package locates it without importing it.
        path = os.path.join(importlib.util.find_spec("app").submodule_search_locations[0], "core", "logs.py")
    spec = importlib.util.spec_from_file_location("listens_logs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_logs = _load_logs()
# One line per event (a traceback's line breaks escaped), shared with the warm job.
OneLineFormatter = _logs.OneLineFormatter

# One key=value line per event, like the warm job's (app/warm/job.py); journald
# adds the time, so the line does not. Without this, the app's own warnings
# (app.reader: an invalid snapshot, memcached unavailable) reach stderr through
# Python's last-resort handler as a bare message, without level or logger.
# The access log becomes key=value too; gunicorn escapes quotes inside values.
# Under systemd (JOURNAL_STREAM names our stdout/stderr) each line starts with
# its priority, <3> error to <7> debug, which journald keeps as the entry's
# priority and strips: journalctl -p warning -u listens-web shows the warnings.
_LINE = "level=%(levelname)s logger=%(name)s pid=%(process)d %(message)s"
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"line": {"()": OneLineFormatter, "fmt": _LINE}},
    "handlers": {
        "stderr": {"()": _logs.JournalHandler, "formatter": "line", "stream": "ext://sys.stderr"},
        "stdout": {"()": _logs.JournalHandler, "formatter": "line", "stream": "ext://sys.stdout"},
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

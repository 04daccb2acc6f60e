"""deploy/gunicorn.conf.py: real gunicorn settings, no control socket, and one log line per event."""

from __future__ import annotations
import __future__

import inspect
import logging
import os
import re
import runpy
import signal
import subprocess
import sys

import pytest
import requests
from gunicorn.config import Config

from app.core.snapshot import pointer_key
from tests.ops import analyze
from tests.support import REPO
from tests.support import free_port
from tests.support import service_env
from tests.support import wait_until
from tests.support.memcached import cache_set

CONF = REPO / "deploy" / "gunicorn.conf.py"
LINE = re.compile(r"^level=(DEBUG|INFO|WARNING|ERROR|CRITICAL) logger=\S+ pid=\d+ \S")


@pytest.fixture
def conf(monkeypatch) -> dict:
    """The settings the file defines when no LISTENS_* variable is set."""
    monkeypatch.delenv("LISTENS_BIND", raising=False)
    monkeypatch.delenv("LISTENS_WORKERS", raising=False)
    return runpy.run_path(str(CONF))


def settings_in(conf: dict) -> dict:
    return {
        name: value
        for name, value in conf.items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and not inspect.isclass(value)
        and not isinstance(value, __future__._Feature)
    }


def test_gunicorn_conf_sets_only_settings_gunicorn_knows(conf):
    # gunicorn ignores unknown names in a config file without a word.
    config = Config()

    for name, value in settings_in(conf).items():
        assert name in config.settings, f"{name} is not a gunicorn setting"
        config.set(name, value)


def test_gunicorn_conf_binds_loopback_disables_control_socket_and_recycles_workers(conf):
    web = analyze.parse_unit(analyze.UNIT_DIR / "listens-web.service")

    assert conf["wsgi_app"] == "app:create_app()"
    assert conf["bind"] == "127.0.0.1:8000"
    assert conf["worker_class"] == "sync" and conf["workers"] == 2
    assert conf["control_socket_disable"] is True
    assert conf["max_requests"] > 0 and 0 < conf["max_requests_jitter"] < conf["max_requests"]
    assert 0 < conf["timeout"] <= 60
    assert conf["graceful_timeout"] < analyze.seconds(analyze.value(web, "Service", "TimeoutStopSec"))
    assert conf["accesslog"] == "-" and conf["errorlog"] == "-"
    assert conf["chdir"] == str(REPO)


def test_one_line_formatter_keeps_a_traceback_on_one_line(conf):
    formatter = conf["OneLineFormatter"](fmt=conf["_LINE"])
    try:
        raise ValueError("first line\nsecond line")
    except ValueError:
        record = logging.LogRecord("app", logging.ERROR, __file__, 1, "Exception on / [GET]", None, sys.exc_info())

    line = formatter.format(record)

    assert "\n" not in line and "\r" not in line
    assert line.startswith("level=ERROR logger=app pid=") and "Traceback" in line and "second line" in line


def test_web_workers_log_one_key_value_line_per_event_and_open_no_control_socket(tmp_path, memcached):
    home = tmp_path / "home"
    home.mkdir()
    # An invalid pointer makes app.reader log a WARNING from the worker.
    cache_set(memcached.address, pointer_key("user-listens"), b"abc")
    port = free_port()
    env = service_env(
        {
            "LISTENS_MEMCACHED": memcached.address,
            "LISTENS_DATABASE": str(tmp_path / "listens.sqlite3"),
            "LISTENS_BIND": f"127.0.0.1:{port}",
            "LISTENS_WORKERS": "1",
            "HOME": str(home),
        }
    )
    env.pop("XDG_RUNTIME_DIR", None)
    stdout, stderr = open(tmp_path / "stdout", "wb"), open(tmp_path / "stderr", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", str(CONF)], cwd=tmp_path, env=env, stdout=stdout, stderr=stderr
    )
    try:
        # /healthz answers 503 here: an invalid pointer is `unavailable`.
        health = f"http://127.0.0.1:{port}/healthz"
        wait_until(
            lambda: process.poll() is None and requests.get(health, timeout=2).status_code == 503, 30, "gunicorn"
        )
        assert requests.get(f"http://127.0.0.1:{port}/?q=a%22b", timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        stdout.close()
        stderr.close()

    errors = (tmp_path / "stderr").read_text().splitlines()
    access = (tmp_path / "stdout").read_text().splitlines()
    assert errors and all(LINE.match(line) for line in errors), errors
    assert access and all(LINE.match(line) for line in access), access
    warnings = [line for line in errors if line.startswith("level=WARNING logger=app.reader ")]
    assert len(warnings) == 1 and "user-listens:v2:current" in warnings[0]
    request = re.compile(r'logger=gunicorn.access .* method=GET path="/" query="q=a%22b" status=200 ')
    assert any(request.search(line) for line in access)
    assert not (home / ".gunicorn").exists() and os.listdir(home) == []

"""Helpers for the fault-injection tests: a whole site as processes, pausable warm runs, cache peeks.

Everything runs on loopback, is polled for readiness with a deadline and is
stopped by its own PID (tests.support does the process work; this module only
composes it).
"""

from __future__ import annotations

import dataclasses
import html.parser
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import requests

from app.core.snapshot import Pointer
from app.core.snapshot import decode_pointer
from app.core.snapshot import lease_key
from app.core.snapshot import pointer_key
from app.core.snapshot import snapshot_key
from tests import support
from tests.support import REPO
from tests.support import FakeLastfm
from tests.support import Gunicorn
from tests.support import MemcachedProcess
from tests.support import run_warm
from tests.support import service_env
from tests.support import wait_until

PREFIX = "user-listens"
API_PATH = "/api/internal/user-listens"
RESPONSE_TIMEOUT_S = 10


# -- memcached, spoken to directly (never through the code under test) ---------------------------------


def _exchange(address: str, request: bytes, done, timeout_s: float = 5.0) -> bytes:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout_s) as connection:
        connection.sendall(request)
        reply = b""
        while not done(reply):
            chunk = connection.recv(65536)
            if not chunk:
                break
            reply += chunk
    return reply


def cache_get(address: str, key: str) -> bytes | None:
    """Return the raw bytes stored under key, or None on a miss."""
    reply = _exchange(address, f"get {key}\r\n".encode(), lambda data: data.endswith(b"END\r\n"))
    if reply == b"END\r\n":
        return None
    header, _, rest = reply.partition(b"\r\n")
    length = int(header.split()[3])
    return rest[:length]


def cache_set(address: str, key: str, value: bytes, flags: int = 0) -> None:
    """Store value under key with a plain set, as a foreign writer would."""
    request = f"set {key} {flags} 0 {len(value)}\r\n".encode() + value + b"\r\n"
    reply = _exchange(address, request, lambda data: data.endswith(b"\r\n"))
    assert reply == b"STORED\r\n", reply


def cache_delete(address: str, key: str) -> None:
    _exchange(address, f"delete {key}\r\n".encode(), lambda data: data.endswith(b"\r\n"))


def pointer_at(address: str) -> Pointer | None:
    raw = cache_get(address, pointer_key(PREFIX))
    return decode_pointer(raw) if raw is not None else None


def lease_at(address: str) -> bytes | None:
    return cache_get(address, lease_key(PREFIX))


def snapshot_at(address: str, generation: int) -> bytes | None:
    return cache_get(address, snapshot_key(PREFIX, generation))


# -- the warm job's output -------------------------------------------------------------------------------


def summary_of(stderr: str) -> dict[str, str]:
    """Return the key=value pairs of the one summary line in a warm run's stderr."""
    lines = [line for line in stderr.splitlines() if " warm outcome=" in line]
    assert len(lines) == 1, stderr
    line = lines[0].split(" warm ", 1)[1]
    return dict(re.findall(r'(\w+)=("[^"]*"|\S+)', line))


def counts_of(summary: Mapping[str, str]) -> dict[str, int]:
    names = ("members", "fetched", "carried", "dropped", "failed", "tracks")
    return {name: int(summary[name]) for name in names}


# -- processes ---------------------------------------------------------------------------------------------


class PausedRun:
    """One warm run (tests/faults/warm_runner.py) in its own process, paused at chosen steps."""

    def __init__(self, env: Mapping[str, str], control: Path, pause_at=(), now_offset_s: float | None = None) -> None:
        control.mkdir(parents=True)
        self.control = control
        self.stderr_path = control / "stderr.log"
        arguments = [sys.executable, "-m", "tests.faults.warm_runner", "--control", str(control)]
        for step in pause_at:
            arguments += ["--pause-at", step]
        if now_offset_s is not None:
            arguments += ["--now-offset", str(now_offset_s)]
        self._stderr = open(self.stderr_path, "wb")
        self.process = subprocess.Popen(
            arguments, cwd=REPO, env=service_env(env), stdout=subprocess.DEVNULL, stderr=self._stderr
        )
        self.returncode: int | None = None
        self.stderr = ""

    def wait_reached(self, step: str, timeout_s: float = 30) -> int:
        """Wait until the run is paused at step; return its generation."""
        marker = self.control / f"{step}.reached"

        def reached():
            if marker.exists() and marker.read_text():
                return True
            if self.process.poll() is not None:
                output = self.stderr_path.read_text()
                raise AssertionError(f"warm run exited {self.process.returncode} before {step}:\n{output}")
            return False

        wait_until(reached, timeout_s, f"the warm run to reach {step}", interval_s=0.005)
        return int(marker.read_text())

    def release(self, step: str) -> None:
        (self.control / f"{step}.go").write_text("go")

    def finish(self, timeout_s: float = 60) -> PausedRun:
        """Wait for the run to exit; keep its exit code and stderr."""
        self.returncode = self.process.wait(timeout=timeout_s)
        self._stderr.close()
        self.stderr = self.stderr_path.read_text()
        return self

    def kill(self) -> None:
        """SIGKILL the run where it stands (its checkpoint is waiting, so the step is exact)."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.finish()

    @property
    def summary(self) -> dict[str, str]:
        return summary_of(self.stderr)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        if not self._stderr.closed:
            self._stderr.close()


@dataclasses.dataclass
class Stack:
    """memcached, the fake Last.fm, a members database and (optionally) gunicorn, as real processes."""

    folder: Path
    cache: MemcachedProcess
    lastfm: FakeLastfm
    env: dict[str, str]
    web: Gunicorn | None = None
    runs: list = dataclasses.field(default_factory=list)
    run_count: int = 0

    @classmethod
    def start(
        cls,
        folder: Path,
        *,
        cache: MemcachedProcess | None = None,
        web: bool = True,
        workers: int = 2,
        env: Mapping[str, str] | None = None,
    ) -> Stack:
        started: list = []
        try:
            cache = cache if cache is not None else MemcachedProcess()
            cache.start()
            started.append(cache)
            lastfm = FakeLastfm().start(log_path=folder / "fake-lastfm.log")
            started.append(lastfm)
            settings_env = support.stack_env(cache.address, lastfm.url, folder / "listens.sqlite3", **(env or {}))
            stack = cls(folder, cache, lastfm, settings_env)
            if web:
                stack.web = Gunicorn(settings_env, workers=workers).start(folder / "gunicorn.log")
            return stack
        except BaseException:
            for process in reversed(started):
                process.stop()
            raise

    def stop(self) -> None:
        """Stop every process this stack started, each by its own PID, even when one of them fails to stop."""
        try:
            for run in self.runs:
                run.stop()
            if self.web is not None:
                self.web.stop()
        finally:
            try:
                self.lastfm.stop()
            finally:
                self.cache.stop()

    # -- members and runs --

    def add_members(self, *names: str) -> None:
        support.add_members(Path(self.env["LISTENS_DATABASE"]), names)

    def warm(self, **env: str) -> subprocess.CompletedProcess:
        return run_warm({**self.env, **env}, timeout_s=90)

    def warm_ok(self, **env: str) -> dict[str, str]:
        run = self.warm(**env)
        assert run.returncode == 0, run.stderr
        summary = summary_of(run.stderr)
        assert summary["outcome"] == "published", run.stderr
        return summary

    def paused(self, name: str, pause_at=(), now_offset_s: float | None = None, **env: str) -> PausedRun:
        self.run_count += 1
        run = PausedRun({**self.env, **env}, self.folder / f"run-{self.run_count}-{name}", pause_at, now_offset_s)
        self.runs.append(run)
        return run

    def other_host(self, name: str) -> dict[str, str]:
        """Return env overrides for a warm run on "another host": its own lock file, the same memcached."""
        return {"LISTENS_LOCK_FILE": str(self.folder / f"{name}.lock")}

    # -- what visitors see --

    def get(self, path: str) -> requests.Response:
        return requests.get(self.web.url + path, timeout=RESPONSE_TIMEOUT_S)

    def api(self) -> dict:
        response = self.get(API_PATH)
        assert response.status_code == 200, response.text
        return response.json()

    def page(self) -> str:
        response = self.get("/")
        assert response.status_code == 200, response.text
        return response.text

    def pointer(self) -> Pointer | None:
        return pointer_at(self.cache.address)

    def log(self) -> str:
        return self.web.log_path.read_text(errors="replace")


def page_state(page: str) -> str:
    match = re.search(r'data-state="(\w+)"', page)
    assert match is not None, page[:2000]
    return match.group(1)


class PageParser(html.parser.HTMLParser):
    """Collect every element, attribute and text node of a page, as a browser's tokenizer would see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.texts: list[str] = []
        self.comments: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, attrs))

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, attrs))

    def handle_data(self, data):
        self.texts.append(data)

    def handle_comment(self, data):
        self.comments.append(data)

    @classmethod
    def parse(cls, page: str) -> PageParser:
        parser = cls()
        parser.feed(page)
        parser.close()
        return parser


def timed_get(url: str) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.get(url, timeout=RESPONSE_TIMEOUT_S)
    return response, time.monotonic() - started

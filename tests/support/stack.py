"""A whole site as real processes: memcached, the fake Last.fm, gunicorn, nginx in front, and warm runs.

Every process runs on loopback and is stopped by its own PID. Whatever
fails while a stack starts, each process already started is stopped before
the error goes on; `with Stack(folder) as stack:` stops it all at the end.
A warm run can be paused at, or killed at, one step of the protocol
(docs/design.md, Publish) through tests/support/warm_runner.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import pytest
import requests

from app.core.settings import load_settings
from app.core.snapshot import Pointer
from app.core.snapshot import decode_pointer
from app.core.snapshot import lease_key
from app.core.snapshot import pointer_key
from app.core.snapshot import snapshot_key
from app.warm import job
from tests.support import REPO
from tests.support import SERVER_NAME
from tests.support import FakeLastfm
from tests.support import Gunicorn
from tests.support import MemcachedProcess
from tests.support import Nginx
from tests.support import add_members
from tests.support import run_warm
from tests.support import service_env
from tests.support import stack_env
from tests.support import wait_until
from tests.support.memcached import cache_get
from tests.support.warmlog import summary_of

PREFIX = "user-listens"
API_PATH = "/api/internal/user-listens"
RESPONSE_TIMEOUT_S = 10
WARM_TIMEOUT_S = 90


def pointer_at(address: str) -> Pointer | None:
    """Return the pointer stored in the memcached at address, or None."""
    raw = cache_get(address, pointer_key(PREFIX))
    return decode_pointer(raw) if raw is not None else None


def lease_at(address: str) -> bytes | None:
    return cache_get(address, lease_key(PREFIX))


def snapshot_at(address: str, generation: int) -> bytes | None:
    return cache_get(address, snapshot_key(PREFIX, generation))


def stack_fixture(name: str, **options):
    """Return a module-scoped fixture yielding a started Stack(folder, **options) in a fresh folder called name."""

    @pytest.fixture(scope="module")
    def started_stack(tmp_path_factory) -> Iterator[Stack]:
        with Stack(tmp_path_factory.mktemp(name), **options) as stack:
            yield stack

    return started_stack


class PausedRun:
    """One warm run (tests/support/warm_runner.py) in its own process, paused at chosen steps."""

    def __init__(self, env: Mapping[str, str], control: Path, pause_at=(), now_offset_s: float | None = None) -> None:
        control.mkdir(parents=True)
        self.control = control
        self.stderr_path = control / "stderr.log"
        arguments = [sys.executable, "-m", "tests.support.warm_runner", "--control", str(control)]
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

    def kill(self) -> PausedRun:
        """SIGKILL the run where it stands (its checkpoint is waiting, so the step is exact)."""
        os.kill(self.process.pid, signal.SIGKILL)
        return self.finish()

    @property
    def summary(self) -> dict[str, str]:
        return summary_of(self.stderr)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        if not self._stderr.closed:
            self._stderr.close()


class Stack:
    """memcached, the fake Last.fm, a members database, gunicorn (web) and nginx in front (nginx_site)."""

    def __init__(
        self,
        folder: Path,
        *,
        members: Iterable[str] = (),
        web: bool = True,
        workers: int = 2,
        env: Mapping[str, str] | None = None,
        cache: MemcachedProcess | None = None,
        publish: bool = False,
        nginx_site: Path | None = None,
        certificate: tuple[Path, Path] = (),
    ) -> None:
        """Describe a stack; start() (or `with`) starts it.

        :param members: added to the database before the first warm run and gunicorn.
        :param publish: run the warm job once (it must publish) before gunicorn starts.
        :param nginx_site: a deploy/nginx site file; nginx then serves it in front of gunicorn.
        """
        self.folder = folder
        self.database = folder / "listens.sqlite3"
        self.members = tuple(members)
        self.workers = workers
        self.publish = publish
        self.extra_env = dict(env or {})
        self.cache = cache if cache is not None else MemcachedProcess()
        self.want_web = web
        self.nginx_site = nginx_site
        self.certificate = certificate
        self.lastfm = FakeLastfm()
        self.env: dict[str, str] = {}
        self.web: Gunicorn | None = None
        self.nginx: Nginx | None = None
        self.session = requests.Session()
        self.runs: list[PausedRun] = []
        self.run_count = 0
        self._started = contextlib.ExitStack()

    def start(self) -> Stack:
        """Start every process; on any failure stop those already started, then raise."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as started:
            started.callback(self.session.close)
            self.cache.start()
            started.callback(self.cache.stop)
            self.lastfm.start(log_path=self.folder / "fake-lastfm.log")
            started.callback(self.lastfm.stop)
            self.env = stack_env(self.cache.address, self.lastfm.url, self.database, **self.extra_env)
            self.add_members(*self.members)
            if self.publish:
                self.warm_ok()
            if self.want_web:
                self.web = Gunicorn(self.env, workers=self.workers)
                started.callback(self.web.stop)
                self.web.start(self.folder / "gunicorn.log")
            if self.nginx_site is not None:
                upstream = f"127.0.0.1:{self.web.port}"
                self.nginx = Nginx(self.folder / "nginx", upstream, site=self.nginx_site, certificate=self.certificate)
                started.callback(self.nginx.stop)
                self.nginx.start()
                self.session.headers["Host"] = SERVER_NAME
            started.callback(self.stop_runs)
            self._started = started.pop_all()
        return self

    def stop(self) -> None:
        """Stop every process this stack started, each by its own PID, even when one of them fails to stop."""
        self._started.close()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def reset(self) -> None:
        """Empty the cache (starting memcached again if a test stopped it) and reset the fake Last.fm."""
        if self.cache.process.poll() is not None:
            self.cache.start()
        self.cache.flush()
        self.lastfm.control("reset")

    def replace_workers(self) -> None:
        """Replace gunicorn's workers, as `systemctl reload listens-web` does.

        Each worker keeps the newest snapshot it has shown and never shows an
        older one, and shows it while memcached is down: a test's state must
        not depend on what the previous test showed.
        """
        arbiter = self.web.process.pid
        children = Path(f"/proc/{arbiter}/task/{arbiter}/children")
        old = set(children.read_text().split())
        os.kill(arbiter, signal.SIGHUP)

        def replaced() -> bool:
            workers = set(children.read_text().split())
            if len(workers) != len(old) or workers & old:
                return False
            return requests.get(f"{self.web.url}/healthz", timeout=5).status_code in (200, 503)

        wait_until(replaced, 30, "gunicorn's workers replaced")

    @contextlib.contextmanager
    def cache_down(self, hung: bool) -> Iterator[None]:
        """Keep memcached down for the block: hung (SIGSTOP, connections accepted, nothing answered) or stopped.

        Afterwards a hung memcached is resumed with its keys; a stopped one
        starts again on the same port with every key lost.
        """
        down, up = (self.cache.pause, self.cache.resume) if hung else (self.cache.stop, self.cache.start)
        down()
        try:
            yield
        finally:
            up()

    # -- members and runs --

    def add_members(self, *names: str) -> None:
        if names:
            add_members(self.database, names)

    def warm(self, **env: str) -> subprocess.CompletedProcess:
        """Run scripts/warm_listens.py once, as the timer does, with env added to the stack's."""
        return run_warm({**self.env, **env}, timeout_s=WARM_TIMEOUT_S)

    def warm_ok(self, **env: str) -> dict[str, str]:
        """Run the warm script once; require exit 0 and a published snapshot; return the summary's pairs."""
        run = self.warm(**env)
        assert run.returncode == 0, run.stderr
        summary = summary_of(run.stderr)
        assert summary["outcome"] == "published", run.stderr
        return summary

    def warm_at(self, moment: datetime) -> None:
        """Publish a snapshot as a warm run started at moment would have (Last.fm's clock too)."""
        self.lastfm.control("clock", {"now": moment.timestamp()})
        try:
            result = job.run(load_settings(self.env), now=moment)
        finally:
            self.lastfm.control("clock", {"now": None})
        assert result.outcome == "published", result.summary()

    def paused(self, name: str, pause_at=(), now_offset_s: float | None = None, **env: str) -> PausedRun:
        """Start a warm run that pauses at each step of pause_at; it is stopped with the stack at the latest."""
        self.run_count += 1
        control = self.folder / f"run-{self.run_count}-{name}"
        run = PausedRun({**self.env, **env}, control, pause_at, now_offset_s)
        self.runs.append(run)
        return run

    def killed_at(self, step: str, **env: str) -> PausedRun:
        """Run the warm job until it reaches step, SIGKILL it there, and return the finished run."""
        run = self.paused(f"killed-at-{step}", (step,), **env)
        run.wait_reached(step)
        return run.kill()

    def stop_runs(self) -> None:
        """Stop every paused run still going, and forget them all."""
        for run in self.runs:
            run.stop()
        self.runs.clear()

    def other_host(self, name: str) -> dict[str, str]:
        """Return env overrides for a warm run on "another host": its own lock file, the same memcached."""
        return {"LISTENS_LOCK_FILE": str(self.folder / f"{name}.lock")}

    # -- what visitors see --

    def get(self, path: str, **kwargs) -> requests.Response:
        """GET path as a visitor does: through nginx when the stack has it, else from gunicorn."""
        if self.nginx is not None:
            return self.session.get(self.nginx.url + path, timeout=RESPONSE_TIMEOUT_S, **kwargs)
        return requests.get(self.web.url + path, timeout=RESPONSE_TIMEOUT_S, **kwargs)

    def direct(self, path: str) -> requests.Response:
        """Ask gunicorn itself, bypassing nginx."""
        return requests.get(self.web.url + path, timeout=RESPONSE_TIMEOUT_S)

    def get_ok(self, path: str) -> requests.Response:
        """GET path as a visitor does; require a 200."""
        response = self.get(path)
        assert response.status_code == 200, response.text
        return response

    def api(self) -> dict:
        return self.get_ok(API_PATH).json()

    def state(self) -> str:
        return self.api()["state"]

    def page(self) -> str:
        return self.get_ok("/").text

    def pointer(self) -> Pointer | None:
        return pointer_at(self.cache.address)

    def log(self) -> str:
        return self.web.log_path.read_text(errors="replace")

    def access_lines(self) -> list[str]:
        """Return gunicorn's access log lines so far."""
        return [line for line in self.log().splitlines() if "gunicorn.access" in line]

    def settled_access_lines(self) -> list[str]:
        """Return gunicorn's access lines once a request made now has been logged.

        gunicorn logs a request just after answering it, so a line may lag
        its answer by a moment; an uncached request's own line marks the
        point by which every earlier answer's line is written.
        """
        marker = f"settle-{time.monotonic_ns()}"
        assert self.get(f"/healthz?{marker}").status_code == 200
        wait_until(lambda: any(marker in line for line in self.access_lines()), 5, "gunicorn's access line")
        return [line for line in self.access_lines() if marker not in line and "settle-" not in line]

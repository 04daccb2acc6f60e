"""Real processes for the tests: memcached, the fake Last.fm, gunicorn, the warm script.

Each is started on a free loopback port, polled for readiness with a
deadline (never a fixed sleep), and stopped by its own PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from contextlib import closing
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path

import requests

from app.core import cache
from app.core.snapshot import Snapshot
from app.core.snapshot import generation_from
from app.warm import members
from app.warm import publisher
from tests.support.memcached import memcached_command
from tests.support.processes import stop_process
from tests.support.processes import timed  # noqa: F401 (for the tests)
from tests.support.processes import wait_ready
from tests.support.processes import wait_until
from tests.support.tracks import make_track

REPO = Path(__file__).resolve().parents[2]
WARM_SCRIPT = REPO / "scripts" / "warm_listens.py"
TEST_API_KEY = "test-key-5f2b9c0e7d1a4e3b"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def debian_binary(name: str, folder: str) -> str:
    """Return the path of Debian's program name (the package of the same name), found on PATH or in folder."""
    binary = shutil.which(name) or f"{folder}/{name}"
    if not Path(binary).exists():
        raise RuntimeError(f"{name} is not installed: run 'apt-get install {name}' (make test does this)")
    return binary


class StartedInWith:
    """`with Process() as server:` starts the process and stops it by its PID however the block ends."""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


class MemcachedProcess(StartedInWith):
    """A real memcached on a free loopback port, UDP off."""

    def __init__(self, memory_mb: int = 64, extra_args: tuple[str, ...] = ()) -> None:
        self.binary = debian_binary("memcached", "/usr/bin")
        self.memory_mb = memory_mb
        self.extra_args = extra_args
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> MemcachedProcess:
        command = [
            self.binary,
            "-l",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "0",
            "-m",
            str(self.memory_mb),
            *self.extra_args,
        ]
        if os.geteuid() == 0:
            command += ["-u", "nobody"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_ready(
            self,
            lambda: self._alive() and memcached_command("version", self.address).startswith("VERSION"),
            10,
            f"memcached on {self.address}",
        )
        return self

    def _alive(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"memcached exited: {self.process.stderr.read().decode(errors='replace')}")
        return True

    def flush(self) -> None:
        assert memcached_command("flush_all", self.address).startswith("OK")

    def pause(self) -> None:
        """SIGSTOP memcached and wait until every thread of it has stopped.

        The kernel still accepts connections, and nothing answers. kill()
        returns before the signal has stopped the threads, and one of them
        could still answer the next request.
        """
        os.kill(self.process.pid, signal.SIGSTOP)
        tasks = Path(f"/proc/{self.process.pid}/task")

        def stopped() -> bool:
            return all((task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "T" for task in tasks.iterdir())

        wait_until(stopped, 5, f"memcached {self.address} stopped by SIGSTOP")

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
        stop_process(self.process, 10)
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()

    def restart(self) -> None:
        """Stop and start again on the same port: every key is lost."""
        self.stop()
        self.start()


class FakeLastfm(StartedInWith):
    """The repository's fake Last.fm server as a subprocess; its log goes to log_path if given."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.log_path: Path | None = None
        self._log = None

    def start(self, *extra: str, log_path: Path | None = None) -> FakeLastfm:
        self.log_path = log_path
        self._log = open(log_path, "wb") if log_path is not None else None
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devtools.fake_lastfm", "--host", "127.0.0.1", "--port", "0", *extra],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=self._log if self._log is not None else subprocess.DEVNULL,
            text=True,
        )
        line = self.process.stdout.readline()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"fake Last.fm did not start: {line!r}")
        self.url = line.rsplit(" ", 1)[1].strip()
        self.base = self.url.split("/2.0/")[0]
        return self

    def control(self, path: str, payload: Mapping | None = None) -> dict:
        response = requests.post(f"{self.base}/_fake/{path}", json=payload or {}, timeout=5)
        response.raise_for_status()
        return response.json()

    def set_user(self, name: str, **mode) -> None:
        self.control(f"users/{name}", mode)

    def stats(self) -> dict:
        return requests.get(f"{self.base}/_fake/stats", timeout=5).json()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        if self.process is not None:
            self.process.stdout.close()
        if self._log is not None:
            self._log.close()


def add_members(database: Path, names, *, private=(), now: datetime | None = None) -> None:
    """Add members whose site and Last.fm names are the same, public unless named in private."""
    with closing(members.connect(database)) as connection:
        for name in names:
            members.add_member(connection, name, name, public=name not in private, now=now or datetime.now(UTC))


def stack_env(memcached: str, lastfm_url: str, database: Path, **extra: str) -> dict[str, str]:
    """Return the environment of a test stack: the test key, the rate limit lifted, a 30 s deadline."""
    return {
        "LASTFM_API_KEY": TEST_API_KEY,
        "LISTENS_MEMCACHED": memcached,
        "LISTENS_LASTFM_URL": lastfm_url,
        "LISTENS_DATABASE": str(database),
        "LISTENS_RATE": "0",
        "LISTENS_DEADLINE_SECONDS": "30",
        # Never the default under /var/lib/prometheus, in a subprocess or in-process.
        "LISTENS_METRICS_FILE": "",
        **extra,
    }


def service_env(settings_env: Mapping[str, str]) -> dict[str, str]:
    """Return a clean environment for a subprocess: PATH and Python, plus settings_env."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LISTENS_", "LASTFM_"))}
    # Tests read right after a publish; production re-checks the pointer at
    # most every 0.5 s (tests/integration/test_recheck.py covers that).
    env["LISTENS_POINTER_RECHECK_SECONDS"] = "0"
    # Never the default under /var/lib/prometheus: tests that want the textfile set a path.
    env["LISTENS_METRICS_FILE"] = ""
    env.update(settings_env)
    return env


class Gunicorn:
    """The real web service: gunicorn with the deploy config, on a free port."""

    def __init__(self, env: Mapping[str, str], workers: int = 2) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = service_env({**env, "LISTENS_BIND": f"127.0.0.1:{self.port}", "LISTENS_WORKERS": str(workers)})
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None

    def start(self, log_path: Path) -> Gunicorn:
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", str(REPO / "deploy" / "gunicorn.conf.py")],
            cwd=REPO,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

        def ready():
            if self.process.poll() is not None:
                raise AssertionError(f"gunicorn exited early:\n{log_path.read_text()}")
            return requests.get(f"{self.url}/healthz", timeout=2).status_code in (200, 503)

        wait_ready(self, ready, 30, f"gunicorn on {self.url}", interval_s=0.1)
        return self

    def stop(self) -> None:
        stop_process(self.process, 20)
        if self.process is not None:
            self.log.close()


def run_service(
    command: list[str], env: Mapping[str, str], *, cwd: Path = REPO, timeout_s: float = 120, umask: int | None = None
) -> subprocess.CompletedProcess:
    """Run command with env as the systemd units would (service_env), and return it finished, output captured."""
    return subprocess.run(
        command,
        cwd=cwd,
        env=service_env(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )


def run_warm(
    env: Mapping[str, str], timeout_s: float = 120, *, prefix: tuple[str, ...] = (), umask: int | None = None
) -> subprocess.CompletedProcess:
    """Run scripts/warm_listens.py once with env (after prefix, e.g. a wrapper) and return the finished process."""
    return run_service([*prefix, sys.executable, str(WARM_SCRIPT)], env, timeout_s=timeout_s, umask=umask)


def start_warm(env: Mapping[str, str]) -> subprocess.Popen:
    """Start scripts/warm_listens.py with env and return it running, its output piped."""
    return subprocess.Popen(
        [sys.executable, str(WARM_SCRIPT)],
        cwd=REPO,
        env=service_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- nginx: the front door (deploy/nginx) --------------------------------------------------------------

NGINX_SITE = REPO / "deploy" / "nginx" / "listens.conf"
NGINX_TLS_SITE = REPO / "deploy" / "nginx" / "listens-tls.conf"
# The placeholder in the site files that deploy/install.sh replaces with NGINX_SERVER_NAME.
SERVER_NAME = "listens.example.org"


def render_site(
    text: str, *, port: int, upstream: str, cache_dir: Path, tls_port: int = 0, certificate: tuple[Path, Path] = ()
) -> str:
    """Return a site file changed only in listen address, upstream address, cache path (and certificate paths)."""
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("listen [::]:"):
            continue  # loopback IPv4 only in tests
        line = line.replace("listen 80", f"listen 127.0.0.1:{port}").replace(
            "listen 443", f"listen 127.0.0.1:{tls_port}"
        )
        line = line.replace("server 127.0.0.1:8000;", f"server {upstream};")
        line = line.replace("/var/cache/nginx/listens", str(cache_dir))
        if certificate and stripped.startswith("ssl_certificate "):
            line = f"    ssl_certificate {certificate[0]};"
        if certificate and stripped.startswith("ssl_certificate_key "):
            line = f"    ssl_certificate_key {certificate[1]};"
        lines.append(line)
    return "\n".join(lines) + "\n"


class Nginx(StartedInWith):
    """Debian's nginx in the foreground with a deploy/nginx site, its own prefix, temp and cache dirs, on loopback."""

    def __init__(
        self, folder: Path, upstream: str, site: Path = NGINX_SITE, certificate: tuple[Path, Path] = ()
    ) -> None:
        self.binary = debian_binary("nginx", "/usr/sbin")
        self.folder = folder
        self.port = free_port()
        self.tls_port = free_port() if certificate else 0
        self.url = f"http://127.0.0.1:{self.port}"
        self.cache_dir = folder / "cache"
        self.access_log = folder / "access.log"
        self.error_log = folder / "error.log"
        self.site = site
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "site.conf").write_text(
            render_site(
                site.read_text(),
                port=self.port,
                upstream=upstream,
                cache_dir=self.cache_dir,
                tls_port=self.tls_port,
                certificate=certificate,
            )
        )
        temp = {name: folder / "temp" / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
        for path in temp.values():
            path.mkdir(parents=True, exist_ok=True)
        # As root, the workers run as root too: the pytest folders are root's, 0700.
        user = "user root root;\n" if os.geteuid() == 0 else ""
        (folder / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes 2;\npid {folder}/nginx.pid;\nerror_log {self.error_log} warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            "    include /etc/nginx/mime.types;\n"
            "    default_type application/octet-stream;\n"
            "    sendfile on;\n    tcp_nopush on;\n"
            f"    access_log {self.access_log};\n"
            + "".join(f"    {name}_temp_path {path};\n" for name, path in temp.items())
            + "    include site.conf;\n}\n"
        )
        self.process: subprocess.Popen | None = None

    def command(self, *extra: str) -> list[str]:
        return [
            self.binary,
            "-p",
            f"{self.folder}/",
            "-c",
            str(self.folder / "nginx.conf"),
            "-e",
            str(self.error_log),
            *extra,
        ]

    def test_config(self) -> subprocess.CompletedProcess:
        """Run nginx -t on this configuration."""
        return subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)

    def start(self) -> Nginx:
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def ready():
            if self.process.poll() is not None:
                raise AssertionError(f"nginx exited {self.process.returncode}:\n{self.error_log.read_text()}")
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        wait_ready(self, ready, 15, f"nginx on {self.url}", interval_s=0.05)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        stop_process(self.process, 20)


def publish_aged(settings, prefix: str, *, age: timedelta, tracks: int = 1) -> Snapshot:
    """Publish a snapshot of tracks copies of one track whose newest fetch is age old, as the warm job would."""
    updated = datetime.now(UTC) - age
    track = make_track("alice", played_at=updated, fetched_at=updated)
    snapshot = Snapshot(generation=generation_from(updated), last_updated=updated, tracks=(track,) * tracks, stats={})
    client = cache.connect(settings.memcached_servers, timeout_ms=cache.WRITER_TIMEOUT_MS)
    assert publisher.publish_snapshot(client, prefix, snapshot, expiry_s=3600) == publisher.PublishOutcome.PUBLISHED
    return snapshot

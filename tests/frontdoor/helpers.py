"""Helpers of the front-door tests: the site behind nginx, and raw HTTP exchanges that keep every header.

Everything runs on loopback and is stopped by its own PID (tests.support
starts the processes; this module only composes them).
"""

from __future__ import annotations

import dataclasses
import re
import socket
import ssl
import time
from pathlib import Path

import requests

from tests.support import NGINX_SITE
from tests.support import SERVER_NAME
from tests.support import FakeLastfm
from tests.support import Gunicorn
from tests.support import MemcachedProcess
from tests.support import Nginx
from tests.support import add_members
from tests.support import run_warm
from tests.support import stack_env
from tests.support import wait_until

API_PATH = "/api/internal/user-listens"
MEMBERS = tuple(f"member{index}" for index in range(12))


def shows_members(page: str) -> bool:
    """Tell whether a page lists members (it shows the top LISTENS_ITEMS of them)."""
    return sum(f">{name}<" in page for name in MEMBERS) >= 3


@dataclasses.dataclass
class Answer:
    """One HTTP answer as it came over the wire: the status and every header line, duplicates kept."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


def exchange(
    port: int, request: bytes, *, source: str = "", timeout_s: float = 10.0, tls: ssl.SSLContext | None = None
) -> Answer:
    """Send request bytes as they are (nothing fixed up); read one answer (its Content-Length, or until closed).

    With tls, the connection is TLS, with SERVER_NAME as SNI and the name checked.
    """
    plain = socket.create_connection(
        ("127.0.0.1", port), timeout=timeout_s, source_address=(source, 0) if source else None
    )
    with tls.wrap_socket(plain, server_hostname=SERVER_NAME) if tls is not None else plain as connection:
        try:
            connection.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking everything: read that answer
        data = b""
        try:
            while chunk := connection.recv(65536):
                data += chunk
                head, found, body = data.partition(b"\r\n\r\n")
                length = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
                if found and length and len(body) >= int(length.group(1)):
                    break
        except ConnectionResetError:
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), data[:200]
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:] if ":" in line]
    return Answer(int(lines[0].split()[1]), headers, body)


def get(port: int, path: str, *, source: str = "", extra: str = "", tls: ssl.SSLContext | None = None) -> Answer:
    request = f"GET {path} HTTP/1.1\r\nHost: {SERVER_NAME}\r\n{extra}Connection: close\r\n\r\n"
    return exchange(port, request.encode("latin-1"), source=source, tls=tls)


@dataclasses.dataclass
class FrontDoor:
    """memcached, the fake Last.fm, gunicorn (deploy/gunicorn.conf.py) and nginx in front of it."""

    folder: Path
    memcached: MemcachedProcess
    lastfm: FakeLastfm
    env: dict[str, str]
    gunicorn: Gunicorn
    nginx: Nginx
    session: requests.Session

    @classmethod
    def start(cls, folder: Path, *, publish: bool = True, site: Path = NGINX_SITE, **nginx_args) -> FrontDoor:
        memcached = MemcachedProcess().start()
        lastfm = FakeLastfm().start()
        env = stack_env(memcached.address, lastfm.url, folder / "listens.sqlite3")
        add_members(folder / "listens.sqlite3", MEMBERS)
        gunicorn = nginx = None
        try:
            if publish:
                warm = run_warm(env)
                assert warm.returncode == 0, warm.stderr
            gunicorn = Gunicorn(env).start(folder / "gunicorn.log")
            nginx = Nginx(folder / "nginx", f"127.0.0.1:{gunicorn.port}", site=site, **nginx_args).start()
        except BaseException:
            for process in (nginx, gunicorn, lastfm, memcached):
                if process is not None:
                    process.stop()
            raise
        session = requests.Session()
        session.headers["Host"] = SERVER_NAME
        return cls(folder, memcached, lastfm, env, gunicorn, nginx, session)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.session.get(f"{self.nginx.url}{path}", timeout=10, **kwargs)

    def direct(self, path: str) -> requests.Response:
        """Ask gunicorn itself, bypassing nginx."""
        return requests.get(f"{self.gunicorn.url}{path}", timeout=10)

    def access_lines(self) -> list[str]:
        """Return gunicorn's access log lines so far."""
        return [line for line in self.gunicorn.log_path.read_text().splitlines() if "gunicorn.access" in line]

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

    def publish(self) -> None:
        warm = run_warm(self.env)
        assert warm.returncode == 0, warm.stderr

    def stop(self) -> None:
        self.session.close()
        for process in (self.nginx, self.gunicorn, self.lastfm, self.memcached):
            process.stop()

"""Helpers of the front-door tests: the site behind nginx, and raw HTTP exchanges that keep every header.

Everything runs on loopback and is stopped by its own PID (tests.support.stack
starts the processes; this module only says which).
"""

from __future__ import annotations

import dataclasses
import re
import socket
import ssl
from pathlib import Path

from tests.support import NGINX_SITE
from tests.support import SERVER_NAME
from tests.support.stack import Stack

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


def front_door(folder: Path, *, publish: bool = True, site: Path = NGINX_SITE, **nginx_args) -> Stack:
    """Return a stack of MEMBERS behind nginx serving site, one snapshot published unless publish is False."""
    return Stack(folder, members=MEMBERS, publish=publish, nginx_site=site, **nginx_args)

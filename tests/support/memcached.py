"""memcached spoken to directly over its text protocol, never through the code under test.

Tests read and write keys this way to see what the cache holds, to play a
foreign writer, and to read the server's counters. Nothing here starts a
process (tests.support does).
"""

from __future__ import annotations

import socket

# Every stats counter that a write moves. The web side must leave them all
# where they were (docs/design.md, Processes): sets, touches, flushes, deletes,
# CAS in all three results, and increments and decrements whether they hit
# or miss, so that a miss cannot hide a write attempt either.
WRITE_COUNTERS = (
    "cmd_set",
    "cmd_touch",
    "cmd_flush",
    "delete_hits",
    "delete_misses",
    "cas_hits",
    "cas_misses",
    "cas_badval",
    "incr_hits",
    "incr_misses",
    "decr_hits",
    "decr_misses",
)


def _exchange(address: str, request: bytes, multiline: bool, timeout_s: float) -> bytes:
    """Send request; read one reply: up to END (or an error) when multiline, else one line."""
    host, port = address.rsplit(":", 1)
    endings = (b"END\r\n", b"ERROR\r\n") if multiline else (b"\r\n",)
    with socket.create_connection((host, int(port)), timeout=timeout_s) as connection:
        connection.sendall(request)
        reply = b""
        while not reply.endswith(endings):
            chunk = connection.recv(65536)
            if not chunk:
                break
            reply += chunk
    return reply


def memcached_command(text: str, address: str, timeout_s: float = 2.0) -> str:
    """Send one raw text-protocol command and return its reply (up to END for stats and gets)."""
    multiline = text.split()[0] in ("stats", "get", "gets")
    reply = _exchange(address, text.encode("ascii") + b"\r\n", multiline, timeout_s)
    return reply.decode("utf-8", "replace")


def cache_get(address: str, key: str, timeout_s: float = 5.0) -> bytes | None:
    """Return the raw bytes stored under key, or None on a miss."""
    reply = _exchange(address, f"get {key}\r\n".encode(), True, timeout_s)
    if reply == b"END\r\n":
        return None
    header, _, rest = reply.partition(b"\r\n")
    assert header.startswith(b"VALUE "), reply[:200]
    length = int(header.split()[3])
    return rest[:length]


def cache_set(address: str, key: str, value: bytes, flags: int = 0, timeout_s: float = 5.0) -> None:
    """Store value under key with a plain set, as a foreign writer would."""
    request = f"set {key} {flags} 0 {len(value)}\r\n".encode() + value + b"\r\n"
    reply = _exchange(address, request, False, timeout_s)
    assert reply == b"STORED\r\n", reply


def cache_delete(address: str, key: str, timeout_s: float = 5.0) -> bool:
    """Delete key; return whether it was there."""
    reply = _exchange(address, f"delete {key}\r\n".encode(), False, timeout_s)
    assert reply in (b"DELETED\r\n", b"NOT_FOUND\r\n"), reply
    return reply == b"DELETED\r\n"


def memcached_stats(address: str) -> dict[str, int]:
    """Return the server's numeric general-purpose stats."""
    stats = {}
    for line in memcached_command("stats", address).splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "STAT" and parts[2].lstrip("-").isdigit():
            stats[parts[1]] = int(parts[2])
    return stats

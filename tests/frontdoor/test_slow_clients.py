"""Slow clients against the front door: they tie up nginx connections, never gunicorn's two workers.

Without nginx, four clients sending their headers one line a second hold
both sync workers and the page times out for everyone. Behind nginx, 256
such clients plus 64 that read answers one byte a second stay attached
while a normal client's page requests all answer at once.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time

from tests.frontdoor.helpers import shows_members
from tests.support import SERVER_NAME
from tests.support import timed
from tests.support import wait_until

SLOW_HEADERS = 256
SLOW_READERS = 64
REQUESTS = 100
# A generous bound on each request's time, not a benchmark.
BOUND_S = 0.5


class SlowClients:
    """Connections that send a header line a second, or read one byte a second, from one thread."""

    def __init__(self, port: int, headers: int, readers: int) -> None:
        self.port = port
        self.writers = [self._connect() for _ in range(headers)]
        self.readers = [self._connect(receive_buffer=1024) for _ in range(readers)]
        for connection in self.writers:
            connection.sendall(f"GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\n".encode())
        for connection in self.readers:
            connection.sendall(f"GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n".encode())
        self.closed: set[socket.socket] = set()
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _connect(self, receive_buffer: int = 0) -> socket.socket:
        connection = socket.socket()
        if receive_buffer:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        connection.connect(("127.0.0.1", self.port))
        return connection

    def _trickle(self) -> None:
        line = 0
        while not self._stop.wait(1.0):
            line += 1
            for connection in self.writers:
                if connection not in self.closed:
                    try:
                        connection.send(f"X-Slow-{line}: {line}\r\n".encode())
                    except OSError:
                        self.closed.add(connection)
            with selectors.DefaultSelector() as selector:
                for connection in self.readers:
                    if connection not in self.closed:
                        selector.register(connection, selectors.EVENT_READ)
                for key, _ in selector.select(timeout=0):
                    try:
                        byte = key.fileobj.recv(1)
                    except OSError:
                        byte = b""
                    if byte:
                        self.received += 1
                    else:
                        self.closed.add(key.fileobj)

    @property
    def attached(self) -> int:
        return len(self.writers) + len(self.readers) - len(self.closed)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for connection in self.writers + self.readers:
            connection.close()


def test_slow_clients_never_delay_the_page(front):
    front.get("/")  # the page is cached, as it is on a live site
    slow = SlowClients(front.nginx.port, SLOW_HEADERS, SLOW_READERS)
    try:
        # Every slow reader has its answer started (one byte each, a second in).
        wait_until(lambda: slow.received >= SLOW_READERS, 10, "the slow readers' first bytes", interval_s=0.1)
        attached_before = slow.attached
        latencies = []
        health_latencies = []
        for index in range(REQUESTS):
            answer, elapsed = timed(lambda: front.get("/"))
            assert answer.status_code == 200 and shows_members(answer.text), index
            latencies.append(elapsed)
            if index % 10 == 0:
                # Never cached: this one goes through to gunicorn every time.
                health, elapsed = timed(lambda: front.get("/healthz"))
                assert health.status_code == 200
                health_latencies.append(elapsed)
            time.sleep(0.03)
        attached_after = slow.attached
        received = slow.received
    finally:
        slow.close()

    print(
        f"slow clients: {attached_before} attached before, {attached_after} after; "
        f"page worst {max(latencies) * 1000:.1f} ms, /healthz worst {max(health_latencies) * 1000:.1f} ms"
    )
    assert attached_before == attached_after == SLOW_HEADERS + SLOW_READERS
    assert received > SLOW_READERS  # the slow readers are still being answered, byte by byte
    assert max(latencies) < BOUND_S and max(health_latencies) < BOUND_S
    # Afterwards both still serve, and no gunicorn worker was killed for a time-out.
    assert front.nginx.alive() and front.get("/healthz").status_code == 200
    assert front.direct("/healthz").status_code == 200
    assert "WORKER TIMEOUT" not in front.web.log_path.read_text()

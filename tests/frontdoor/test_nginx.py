"""The front door: deploy/nginx/listens.conf in a real nginx, in front of the real gunicorn.

The site file is used as it is, changed only in listen address, upstream
address and cache path (tests.support.render_site).
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import time

import pytest

from app.web.errors import SECURITY_HEADERS
from app.web.views import PUBLIC_CACHE
from tests.frontdoor.helpers import API_PATH
from tests.frontdoor.helpers import exchange
from tests.frontdoor.helpers import front_door
from tests.frontdoor.helpers import get
from tests.frontdoor.helpers import shows_members
from tests.support import NGINX_SITE
from tests.support import NGINX_TLS_SITE
from tests.support import SERVER_NAME
from tests.support import wait_until

MAX_AGE_S = int(re.search(r"max-age=(\d+)", PUBLIC_CACHE).group(1))


def test_page_and_api_are_answered_from_the_cache_with_the_apps_cache_control(front):
    first = front.get("/")
    second = front.get("/")
    api = front.get(API_PATH)

    assert first.status_code == second.status_code == api.status_code == 200
    assert first.headers["X-Cache-Status"] == "MISS" and second.headers["X-Cache-Status"] == "HIT"
    assert second.content == first.content and shows_members(second.text)
    assert second.headers["Cache-Control"] == PUBLIC_CACHE
    assert api.json()["state"] == "fresh"
    # One page request reached gunicorn (the readiness probe asked for /healthz).
    assert len([line for line in front.settled_access_lines() if 'path="/"' in line]) == 1


@pytest.mark.parametrize("path", ["/", "/fragment/listens"])
def test_query_strings_do_not_bypass_the_page_cache(front, path):
    front.get(path)
    answers = [front.get(f"{path}?bust={index}") for index in range(5)]

    assert {answer.headers["X-Cache-Status"] for answer in answers} == {"HIT"}
    assert len([line for line in front.settled_access_lines() if f'path="{path}"' in line]) == 1


@pytest.mark.parametrize("path", ["/", API_PATH])
def test_security_headers_arrive_exactly_once_on_cached_and_uncached_answers(front, path):
    uncached = get(front.nginx.port, path)
    cached = get(front.nginx.port, path)
    health = get(front.nginx.port, "/healthz")

    assert dict(uncached.headers)["X-Cache-Status"] == "MISS" and dict(cached.headers)["X-Cache-Status"] == "HIT"
    for answer in (uncached, cached, health):
        assert answer.status == 200
        for name, value in SECURITY_HEADERS.items():
            assert answer.all(name) == [value], name
        assert len(answer.all("Cache-Control")) == 1
        # nginx's version and gunicorn's name and address stay inside.
        assert answer.all("Server") == ["nginx"]
        assert "127.0.0.1" not in str(answer.headers) and str(front.web.port) not in str(answer.headers)


@pytest.mark.parametrize("path", ["/", API_PATH])
def test_if_none_match_through_nginx_gives_304(front, path):
    etag = front.get(path).headers["ETag"]

    again = front.get(path, headers={"If-None-Match": etag})
    other = front.get(path, headers={"If-None-Match": '"something-else"'})

    assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
    assert other.status_code == 200


def test_healthz_is_never_cached(front):
    before = front.settled_access_lines()
    answers = [front.get("/healthz") for _ in range(3)]
    after = front.settled_access_lines()

    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert "X-Cache-Status" not in answers[0].headers
    assert len([line for line in after[len(before) :] if 'path="/healthz"' in line]) == 3


def test_gunicorn_stopped_page_and_api_answer_from_cache_and_healthz_fails(front):
    page = front.get("/")
    api = front.get(API_PATH)
    front.web.stop()

    # Until the entries expire (max-age), then beyond: stale, never an error.
    statuses = set()
    deadline = time.monotonic() + MAX_AGE_S + 10
    while time.monotonic() < deadline and "STALE" not in statuses:
        for path, before in (("/", page), (API_PATH, api)):
            answer = front.get(path)
            assert answer.status_code == 200, (path, answer.status_code)
            assert answer.content == before.content, path
            statuses.add(answer.headers["X-Cache-Status"])
        health = front.get("/healthz")
        assert health.status_code >= 500, health.status_code
        time.sleep(0.2)

    assert "STALE" in statuses, statuses


def test_publish_shows_through_within_max_age_plus_one_second(front):
    before = front.get(API_PATH).json()["generation"]
    front.get("/")
    front.warm_ok()
    published = time.monotonic()
    after = front.direct(API_PATH).json()["generation"]
    last_modified = front.direct("/").headers["Last-Modified"]

    def shown() -> bool:
        return (
            front.get(API_PATH).json()["generation"] == after
            and front.get("/").headers["Last-Modified"] == last_modified
        )

    wait_until(shown, MAX_AGE_S + 1, "the new generation through nginx", interval_s=0.1)
    assert after != before
    assert time.monotonic() - published <= MAX_AGE_S + 1


def test_first_publish_replaces_the_warming_page_within_seconds(front_warming):
    warming = front_warming.get(API_PATH)
    assert warming.json()["state"] == "warming" and front_warming.get("/").status_code == 200
    front_warming.warm_ok()
    published = time.monotonic()

    wait_until(lambda: front_warming.get(API_PATH).json()["state"] == "fresh", 4, "fresh through nginx", 0.1)
    wait_until(lambda: 'data-state="fresh"' in front_warming.get("/").text, 4, "the fresh page through nginx", 0.1)
    assert time.monotonic() - published < 4


HOSTILE = {
    "64 KB header": f"GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\nX-Big: {'a' * 65536}\r\n\r\n",
    "1 MB POST body": f"POST / HTTP/1.1\r\nHost: {SERVER_NAME}\r\nContent-Length: 1048576\r\n\r\n" + "a" * 1048576,
    "TRACE": f"TRACE / HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n",
    "PUT": f"PUT /api/internal/user-listens HTTP/1.1\r\nHost: {SERVER_NAME}\r\nContent-Length: 2\r\n\r\n{{}}",
    "DELETE": f"DELETE / HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n",
    "Content-Length twice": f"GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\nhello",
    "chunked and Content-Length": (
        f"GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
    ),
    "absolute-form URL to another host": f"GET http://evil.example/ HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n",
    "unknown Host": "GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    "request line over 8 KB": f"GET /{'a' * 9000} HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n",
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_request_gets_4xx_from_nginx_and_never_reaches_gunicorn(front, name):
    before = front.settled_access_lines()

    answer = exchange(front.nginx.port, HOSTILE[name].encode("latin-1"))

    assert 400 <= answer.status < 500, answer.status
    # An ordinary request after it reaches gunicorn and is logged; nothing else was.
    assert front.settled_access_lines() == before


def test_metrics_refused_from_outside_loopback(front):
    outside = get(front.nginx.port, "/metrics", source="127.0.0.2")
    inside = get(front.nginx.port, "/metrics")
    rules = subprocess.run(front.nginx.command("-T"), capture_output=True, text=True, timeout=30).stdout

    assert outside.status == 403
    # Loopback reaches the application (which may or may not serve /metrics yet).
    assert inside.status != 403
    assert re.search(r"location = /metrics \{\s*allow 127\.0\.0\.1;\s*allow ::1;", rules)
    assert re.search(r"location = /metrics \{[^}]*deny all;", rules)


def _site_lines(path) -> list[str]:
    text = path.read_text()
    start = text.index("    # -- the site")
    end = text.index("    # -- end of the site")
    return text[start:end].splitlines()


def test_tls_variant_carries_the_same_site():
    assert _site_lines(NGINX_TLS_SITE) == _site_lines(NGINX_SITE)


@pytest.fixture
def certificate(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={SERVER_NAME}"]
        + ["-addext", f"subjectAltName=DNS:{SERVER_NAME}", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_tls_variant_serves_the_page_over_https_and_redirects_http(tmp_path, certificate):
    # The client checks the certificate nginx presents against the one made above.
    trust = ssl.create_default_context(cafile=str(certificate[0]))
    with front_door(tmp_path / "tls", site=NGINX_TLS_SITE, certificate=certificate) as site:
        first = get(site.nginx.tls_port, "/", tls=trust)
        second = get(site.nginx.tls_port, "/", tls=trust)
        plain = get(site.nginx.port, "/")
        with pytest.raises(ssl.SSLError):
            # Another name in the handshake: refused before any request.
            trust.wrap_socket(
                socket.create_connection(("127.0.0.1", site.nginx.tls_port)), server_hostname="evil.example"
            )

    assert first.status == second.status == 200 and shows_members(second.body.decode())
    assert second.all("X-Cache-Status") == ["HIT"]
    for name, value in SECURITY_HEADERS.items():
        assert second.all(name) == [value], name
    assert plain.status == 301 and plain.all("Location") == [f"https://{SERVER_NAME}/"]

"""Hostile input through the whole pipeline, the API key in no output, and bad configuration refused up front.

Names and links come from whoever can scrobble: the fake Last.fm serves them
verbatim, the real warm script fetches and publishes them, real gunicorn
renders them, and the page is parsed the way a browser's tokenizer would.
"""

from __future__ import annotations

import collections
import json
import unicodedata
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from app.core.snapshot import LASTFM_IMAGE_HOST_SUFFIXES
from app.core.snapshot import LASTFM_IMAGE_HOSTS
from app.core.snapshot import LASTFM_PAGE_HOSTS
from app.core.snapshot import MAX_TEXT_CHARS
from tests.faults.helpers import PageParser
from tests.faults.helpers import page_state
from tests.support import TEST_API_KEY
from tests.support import free_port
from tests.support.memcached import memcached_stats
from tests.support.stack import API_PATH
from tests.support.stack import Stack
from tests.support.warmlog import summary_of

# Text a scrobbler controls: artist, album and track names.
TEXT_PAYLOADS = (
    "<script>alert(1)</script>",
    '"><script>alert(document.cookie)</script>',
    "'><img src=x onerror=alert(1)>",
    '<img src="x" onerror="alert(1)">',
    "<svg/onload=alert(1)>",
    '<iframe src="javascript:alert(1)"></iframe>',
    '<a href="javascript:alert(1)">click me</a>',
    "<body onload=alert(1)>",
    "</title><script>alert(1)</script>",
    "</p></li></ol></section><script>alert(1)</script>",
    "<style>body{display:none}</style>",
    '<meta http-equiv="refresh" content="0;url=https://evil.example/">',
    '<base href="https://evil.example/">',
    "<!-- <script>alert(1)</script> -->",
    "<![CDATA[<script>alert(1)</script>]]>",
    '<math><mi xlink:href="javascript:alert(1)">x</mi></math>',
    '" onmouseover="alert(1)" x="',
    "' onfocus='alert(1)' autofocus x='",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "{{ 7*7 }} {% raw %} ${7*7} #{7*7}",
    "javascript:alert(1)",
    "evil\u202egnp.exe",
    "\u2066isolated\u2069 \u202aembedded\u202c",
    "line one\nline two\r\n<script>alert(1)</script>",
    "nul\x00byte<script>\x07",
    "😀 Ω <b>bold</b> Björk",
    "A" * 10_240,
    "<" * 5_000 + "script>",
)
# Links a scrobble may carry: only https on Last.fm's own hosts may reach the page.
URL_PAYLOADS = (
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    " javascript:alert(1)",
    "java\nscript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "https://evil.example/",
    "https://www.last.fm.evil.example/",
    "https://evil.example@www.last.fm/",
    "//evil.example/x",
    "https://www.last.fm:8443/x",
    "https://www.last.fm\\@evil.example/",
    'https://www.last.fm/music/"><script>alert(1)</script>',
    "http://www.last.fm/music/Upgraded",
    "https://www.last.fm/music/Fine",
)
IMAGE_PAYLOADS = (
    "data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+",
    "javascript:alert(1)",
    "https://evil.example/cover.png",
    "https://lastfm.freetls.fastly.net.evil.example/cover.png",
    'https://lastfm.freetls.fastly.net/i/u/300x300/a.png" onerror="alert(1)',
    "http://lastfm.freetls.fastly.net/i/u/300x300/upgraded.png",
    "https://lastfm.freetls.fastly.net/i/u/300x300/fine.png",
)
# Raw JSON bodies: what the fake cannot say through its track mode (escapes that decode to
# characters UTF-8 cannot hold).
RAW_BODIES = {
    "surrogate": '{"recenttracks":{"track":[{"artist":{"#text":"Lone \\ud800 surrogate"},'
    '"name":"Track \\udfff<script>","album":{"#text":"\\u0000\\u202e"},"url":"https://www.last.fm/music/\\ud800",'
    '"image":[],"date":{"uts":"1700000000"}}],'
    '"@attr":{"user":"surrogate","total":"1"}}}',
}

CONTROL_CATEGORIES = {"Cc", "Cs"}  # control characters and lone surrogates
DIRECTION_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Policies that never send a page's path to another site.
REFERRER_POLICIES = ("no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin")


def hostile_tracks() -> dict[str, dict]:
    """Return member -> the track the fake serves them, covering every payload at least once."""
    tracks = {}
    count = max(len(TEXT_PAYLOADS), len(URL_PAYLOADS), len(IMAGE_PAYLOADS))
    for index in range(count):
        tracks[f"hostile{index:02d}"] = {
            "artist": TEXT_PAYLOADS[index % len(TEXT_PAYLOADS)],
            "album": TEXT_PAYLOADS[(index + 7) % len(TEXT_PAYLOADS)],
            "name": TEXT_PAYLOADS[(index + 13) % len(TEXT_PAYLOADS)],
            "url": URL_PAYLOADS[index % len(URL_PAYLOADS)],
            "image": IMAGE_PAYLOADS[index % len(IMAGE_PAYLOADS)],
        }
    return tracks


def benign_twin(item: dict) -> dict:
    """Return a plain track the template renders with the same structure as item (an API entry)."""
    return {
        "artist": "Plain artist",
        "album": "Plain album" if item["album"] else "",
        "name": "Plain track",
        "url": item["url"],
        "image": item["image"],
        "now_playing": item["nowPlaying"],
    }


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory):
    """A site whose every member scrobbled something hostile, its page and API, and the page of a benign twin run."""
    with Stack(tmp_path_factory.mktemp("hostile"), env={"LISTENS_ITEMS": "50"}) as stack:
        tracks = hostile_tracks()
        stack.add_members(*tracks, *RAW_BODIES)
        for name, track in tracks.items():
            stack.lastfm.set_user(name, mode="track", track=track)
        for name, body in RAW_BODIES.items():
            stack.lastfm.set_user(name, mode="http", status=200, body=body)
        run = stack.warm()
        assert run.returncode == 0, run.stderr
        hostile = {"summary": summary_of(run.stderr), "page": stack.get("/"), "api": stack.get(API_PATH)}
        # The same members with plain names, the same links and images kept, the same albums empty:
        # the template must build exactly the same elements and attributes for both.
        for item in hostile["api"].json()["data"]:
            stack.lastfm.set_user(item["username"], mode="track", track=benign_twin(item))
        stack.warm_ok()
        hostile["benign page"] = stack.page()
        yield stack, hostile


def structure(page: PageParser) -> collections.Counter:
    """Return the multiset of (element, attribute names) of a parsed page."""
    return collections.Counter((tag, tuple(sorted(name for name, _ in attrs))) for tag, attrs in page.elements)


def is_allowed_link(value: str, hosts) -> bool:
    """Return whether value is our own path or https on one of hosts."""
    if value.startswith("/") and not value.startswith("//"):
        return True
    parts = urlsplit(value)
    return parts.scheme == "https" and hosts(parts.hostname or "") and parts.port is None and not parts.username


def page_host(host: str) -> bool:
    return host in LASTFM_PAGE_HOSTS


def image_host(host: str) -> bool:
    return host in LASTFM_IMAGE_HOSTS or host.endswith(LASTFM_IMAGE_HOST_SUFFIXES)


def assert_clean_text(value: str) -> None:
    assert not DIRECTION_CONTROLS.intersection(value), repr(value)
    assert not any(unicodedata.category(character) in CONTROL_CATEGORIES for character in value), repr(value)
    assert len(value) <= MAX_TEXT_CHARS


def test_hostile_track_of_every_member_goes_through_the_pipeline(hostile_site):
    stack, hostile = hostile_site

    members = len(hostile_tracks()) + len(RAW_BODIES)
    summary = hostile["summary"]
    assert (summary["outcome"], summary["fetched"], summary["tracks"]) == ("published", str(members), str(members))
    assert len(hostile["api"].json()["data"]) == members
    assert len(TEXT_PAYLOADS) >= 20


def test_page_escapes_every_hostile_name_and_links_only_to_lastfm(hostile_site):
    stack, hostile = hostile_site
    response = hostile["page"]
    page = PageParser.parse(response.text)

    assert response.status_code == 200 and page_state(response.text) == "fresh"
    # Not one element or attribute more than the same page with plain names: nothing was injected.
    assert structure(page) == structure(PageParser.parse(hostile["benign page"]))
    attributes = [(tag, name, value or "") for tag, attrs in page.elements for name, value in attrs]
    for tag, name, value in attributes:
        if name == "href":
            assert is_allowed_link(value, page_host), (tag, value)
        if name == "src":
            assert is_allowed_link(value, image_host), (tag, value)
    links = [value for _, name, value in attributes if name in ("href", "src")]
    assert not [value for value in links if value.lower().lstrip().startswith(("javascript:", "data:", "vbscript:"))]
    # http links on Last.fm's hosts are kept, as https.
    assert "https://www.last.fm/music/Upgraded" in links
    assert "https://lastfm.freetls.fastly.net/i/u/300x300/upgraded.png" in links
    assert not page.comments
    # Every hostile name is shown, as text: the parser found it in a text node, not as markup
    # (as much of it as the page shows: docs/page.md, Budgets).
    for item in hostile["api"].json()["data"]:
        for field, shown_chars in (("track", 100), ("artist", 80), ("album", 80)):
            name = item[field] if len(item[field]) <= shown_chars else item[field][: shown_chars - 1]
            assert any(name in text for text in page.texts), item[field][:80]
    for text in page.texts:
        assert not DIRECTION_CONTROLS.intersection(text)
    assert "{{ 7*7 }}" in response.text  # shown, never evaluated as a template


def test_api_returns_hostile_names_as_inert_json(hostile_site):
    stack, hostile = hostile_site
    response = hostile["api"]

    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    body = json.loads(response.content.decode("utf-8"))
    for item in body["data"]:
        for field in ("artist", "album", "track"):
            assert isinstance(item[field], str)
            assert_clean_text(item[field])
        assert item["url"] == "" or is_allowed_link(item["url"], page_host), item["url"]
        assert item["image"] == "" or is_allowed_link(item["image"], image_host), item["image"]
    surrogate = next(item for item in body["data"] if item["username"] == "surrogate")
    shown = (surrogate["artist"], surrogate["track"], surrogate["album"], surrogate["url"])
    assert shown == ("Lone  surrogate", "Track <script>", "", "")
    long_names = [item["artist"] for item in body["data"] if item["artist"].startswith("AAAA")]
    assert long_names and all(len(name) == MAX_TEXT_CHARS for name in long_names)


@pytest.mark.parametrize("path", ["/", API_PATH, "/healthz", "/missing", "/static/style.css"])
def test_every_response_carries_security_headers(path, hostile_site):
    stack, _ = hostile_site
    response = stack.get(path)
    directives = [part.strip() for part in response.headers["Content-Security-Policy"].split(";")]
    policy = dict(directive.split(" ", 1) for directive in directives if directive)

    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'" and "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert policy["frame-ancestors"] == "'none'" and response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] in REFERRER_POLICIES


# -- the API key in no output ---------------------------------------------------------------------------------------

KEY_ECHOING_MODES = {
    "echo-message": {"mode": "error", "code": 8, "message": f"Operation failed for api_key={TEST_API_KEY}"},
    "echo-bare": {"mode": "error", "code": 16, "message": f"temporary error, key {TEST_API_KEY}"},
    "echo-user": {"mode": "wrong_user", "other": TEST_API_KEY},
    "err500": {"mode": "http", "status": 500},
    "limited": {"mode": "http", "status": 429, "retry_after": 1},
    "htmlpage": {"mode": "html"},
    "truncated": {"mode": "truncated"},
    "enormous": {"mode": "huge", "bytes": 2_000_000},
    "hangs": {"mode": "hang", "delay_s": 20},
    "renamed": {"mode": "error", "code": 6},
}


def test_api_key_appears_in_no_output_when_requests_fail(make_stack):
    stack = make_stack(env={"LISTENS_DEADLINE_SECONDS": "4"}, members=("steady", *KEY_ECHOING_MODES))
    stack.warm_ok()
    for name, mode in KEY_ECHOING_MODES.items():
        stack.lastfm.set_user(name, **mode)
    outputs = {}

    failing = stack.warm()
    outputs["warm, members failing"] = failing.stdout + failing.stderr
    unreachable = stack.warm(LISTENS_LASTFM_URL=f"http://127.0.0.1:{free_port()}/2.0/")
    outputs["warm, Last.fm unreachable"] = unreachable.stdout + unreachable.stderr
    stack.lastfm.control("reset")
    stack.cache.stop()
    try:
        no_cache = stack.warm()
        outputs["warm, memcached down"] = no_cache.stdout + no_cache.stderr
        outputs["page, memcached down"] = stack.get("/").text
    finally:
        stack.cache.start()
    stack.warm_ok()
    for path in ("/", API_PATH, "/healthz", "/missing"):
        response = stack.get(path)
        outputs[f"web {path}"] = response.text + json.dumps(dict(response.headers))
    assert stack.lastfm.stats()["api_keys_seen"] > 0  # the key was sent all along
    stack.web.stop()
    stack.lastfm.stop()
    outputs["gunicorn log"] = stack.log()
    outputs["fake Last.fm log"] = Path(stack.lastfm.log_path).read_text(errors="replace")
    database = Path(stack.env["LISTENS_DATABASE"])
    files = sorted(database.parent.glob(database.name + "*"))  # the database, its WAL and its lock
    outputs["database files"] = b"".join(path.read_bytes() for path in files).decode("latin-1")

    assert (failing.returncode, unreachable.returncode, no_cache.returncode) == (0, 1, 1)
    assert "[redacted]" in outputs["warm, members failing"]  # the echoed key was there, and was removed
    leaks = [where for where, text in outputs.items() if TEST_API_KEY in text]
    assert leaks == []


# -- bad configuration ----------------------------------------------------------------------------------------------


def bad_database_env(folder: Path, kind: str) -> dict[str, str]:
    """Return env overrides making the database or its lock unusable (as root, permissions would not)."""
    blocker = folder / "not-a-directory"
    blocker.write_text("a file where a folder should be")
    if kind == "database-folder-is-a-file":
        return {"LISTENS_DATABASE": str(blocker / "listens.sqlite3")}
    if kind == "database-is-a-directory":
        (folder / "a-directory.sqlite3").mkdir(exist_ok=True)
        return {"LISTENS_DATABASE": str(folder / "a-directory.sqlite3")}
    if kind == "database-is-not-sqlite":
        (folder / "garbage.sqlite3").write_bytes(b"this is not an SQLite database" * 100)
        return {"LISTENS_DATABASE": str(folder / "garbage.sqlite3")}
    if kind == "lock-file-unwritable":
        return {"LISTENS_LOCK_FILE": str(blocker / "warm.lock")}
    raise AssertionError(kind)


BAD_SETTINGS = {
    "missing-key-with-real-lastfm": (
        {"LISTENS_LASTFM_URL": "https://ws.audioscrobbler.com/2.0/", "LASTFM_API_KEY": ""},
        "LASTFM_API_KEY",
    ),
    "deadline-not-a-number": ({"LISTENS_DEADLINE_SECONDS": "soon"}, "LISTENS_DEADLINE_SECONDS"),
    "rate-infinite": ({"LISTENS_RATE": "inf"}, "LISTENS_RATE"),
    "fresh-seconds-float": ({"LISTENS_FRESH_SECONDS": "4.5"}, "LISTENS_FRESH_SECONDS"),
    "items-out-of-range": ({"LISTENS_ITEMS": "0"}, "LISTENS_ITEMS"),
    "memcached-port-out-of-range": ({"LISTENS_MEMCACHED": "127.0.0.1:99999"}, "LISTENS_MEMCACHED"),
    "memcached-empty-entry": ({"LISTENS_MEMCACHED": "127.0.0.1:11211,,"}, "LISTENS_MEMCACHED"),
    "memcached-url-not-host-port": ({"LISTENS_MEMCACHED": "memcache://127.0.0.1:11211"}, "LISTENS_MEMCACHED"),
    "prefix-with-space": ({"LISTENS_KEY_PREFIX": "user listens"}, "LISTENS_KEY_PREFIX"),
}
BAD_DATABASES = {
    "database-folder-is-a-file": "LISTENS_LOCK_FILE",
    "database-is-a-directory": "LISTENS_DATABASE",
    "database-is-not-sqlite": "LISTENS_DATABASE",
    "lock-file-unwritable": "LISTENS_LOCK_FILE",
}


@pytest.fixture(scope="module")
def quiet_site(tmp_path_factory):
    """memcached and the fake Last.fm, watched for any traffic a refused run might cause."""
    with Stack(tmp_path_factory.mktemp("config"), web=False) as stack:
        stack.add_members("alice", "bob")
        yield stack


@pytest.mark.parametrize("name", sorted(BAD_SETTINGS) + sorted(BAD_DATABASES))
def test_warm_script_exits_2_with_one_line_before_any_network_call_when(name, quiet_site, tmp_path):
    if name in BAD_SETTINGS:
        env, variable = BAD_SETTINGS[name]
    else:
        env, variable = bad_database_env(tmp_path, name), BAD_DATABASES[name]
    lastfm_before = quiet_site.lastfm.stats()["requests"]
    cache_before = memcached_stats(quiet_site.cache.address)

    run = quiet_site.warm(**env)

    cache_after = memcached_stats(quiet_site.cache.address)
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("level=ERROR")]
    assert len(errors) == 1 and variable in errors[0], run.stderr
    assert "Traceback" not in run.stderr
    if run.stderr.count("\n") > 1:
        assert summary_of(run.stderr)["outcome"] == "config"
    assert quiet_site.lastfm.stats()["requests"] == lastfm_before
    # Our own stats connection is the only one memcached saw between the two readings.
    assert cache_after["total_connections"] - cache_before["total_connections"] == 1
    commands = ("cmd_get", "cmd_set", "cmd_touch", "cmd_flush")
    assert {name: cache_after[name] - cache_before[name] for name in commands} == dict.fromkeys(commands, 0)

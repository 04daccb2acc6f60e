"""load_settings: defaults, parsing of every variable, and one-line errors naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import create_app
from app.core import settings as module
from app.core.settings import Settings
from app.core.settings import SettingsError
from app.core.settings import load_settings

SECRET = "s3cr3t-key-0f1e2d3c4b5a"
FAKE_URL = "http://127.0.0.1:8099/2.0/"

INTEGER_VARIABLES = (
    "LISTENS_FRESH_SECONDS",
    "LISTENS_MAX_STALE_SECONDS",
    "LISTENS_ITEMS",
    "LISTENS_CONCURRENCY",
    "LISTENS_REFRESH_SECONDS",
)
FLOAT_VARIABLES = (
    "LISTENS_RATE",
    "LISTENS_DEADLINE_SECONDS",
)


def assert_one_line_naming(error: SettingsError, variable: str) -> None:
    message = str(error)
    assert variable in message
    assert "\n" not in message and "\r" not in message
    assert SECRET not in message


def assert_refused(variable: str, raw: str, match: str | None = None) -> None:
    """Load settings with variable set to raw: expect a one-line SettingsError naming variable (and matching match)."""
    with pytest.raises(SettingsError, match=match) as caught:
        load_settings({"LASTFM_API_KEY": SECRET, variable: raw})
    assert_one_line_naming(caught.value, variable)


# -- defaults -------------------------------------------------------------------


def test_load_settings_defaults_when_environment_is_empty():
    settings = load_settings({})

    assert settings.lastfm_api_key is None
    assert settings.memcached_servers == ("127.0.0.1:11211",)
    assert settings.lastfm_url == "https://ws.audioscrobbler.com/2.0/"
    assert settings.key_prefix == "user-listens"
    assert settings.fresh_s == 420
    assert settings.max_stale_s == 86400
    assert settings.items == 8
    assert settings.concurrency == 8
    assert settings.rate == 5
    assert settings.deadline_s == 240
    assert settings.refresh_s == 60


def test_load_settings_database_defaults_to_the_instance_folder():
    settings = load_settings({})

    assert settings.database.parent.name == "instance"
    assert settings.database == module.DEFAULT_DATABASE


def test_load_settings_default_equals_settings_default():
    assert load_settings({}) == Settings()


@pytest.mark.parametrize("blank", ["", "   ", "\t"])
def test_load_settings_blank_numeric_variable_takes_the_default(blank):
    settings = load_settings({name: blank for name in INTEGER_VARIABLES + FLOAT_VARIABLES})

    assert (settings.fresh_s, settings.max_stale_s, settings.items, settings.concurrency) == (420, 86400, 8, 8)
    assert (settings.rate, settings.deadline_s) == (5, 240)


def test_load_settings_reads_os_environ_when_environ_is_none(monkeypatch):
    for name in ("LASTFM_API_KEY", "LISTENS_MEMCACHED", "LISTENS_LASTFM_URL", "LISTENS_DATABASE", "LISTENS_LOCK_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LISTENS_ITEMS", "12")
    monkeypatch.setenv("LISTENS_KEY_PREFIX", "from-environ")

    settings = load_settings()

    assert (settings.items, settings.key_prefix) == (12, "from-environ")


# -- every variable parsed --------------------------------------------------------


def test_load_settings_api_key_is_stripped():
    assert load_settings({"LASTFM_API_KEY": f"  {SECRET}\n"}).lastfm_api_key == SECRET


def test_load_settings_blank_api_key_is_no_key():
    assert load_settings({"LASTFM_API_KEY": "   "}).lastfm_api_key is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("127.0.0.1:11211", ("127.0.0.1:11211",)),
        ("cache-1.internal:11211,cache-2.internal:11212", ("cache-1.internal:11211", "cache-2.internal:11212")),
        (" a:1 , b:2 ", ("a:1", "b:2")),
        ("a:1,b:2,a:1", ("a:1", "b:2")),
        ("localhost:65535", ("localhost:65535",)),
    ],
)
def test_load_settings_parses_memcached_servers(raw, expected):
    assert load_settings({"LISTENS_MEMCACHED": raw}).memcached_servers == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http://127.0.0.1:8099/2.0/", "http://127.0.0.1:8099/2.0/"),
        ("http://127.0.0.1:8099/2.0", "http://127.0.0.1:8099/2.0/"),
        (" https://lastfm.example/api ", "https://lastfm.example/api/"),
        ("http://fake:80", "http://fake:80/"),
    ],
)
def test_load_settings_parses_lastfm_url(raw, expected):
    assert load_settings({"LISTENS_LASTFM_URL": raw}).lastfm_url == expected


def test_load_settings_parses_database(tmp_path):
    path = tmp_path / "members.sqlite3"

    assert load_settings({"LISTENS_DATABASE": f" {path} "}).database == path


def test_load_settings_parses_lock_file(tmp_path):
    path = tmp_path / "run" / "warm.lock"

    assert load_settings({"LISTENS_LOCK_FILE": str(path)}).lock_path == path


@pytest.mark.parametrize("prefix", ["a", "site-listens", "prod_v.1", "x" * 64])
def test_load_settings_parses_key_prefix(prefix):
    assert load_settings({"LISTENS_KEY_PREFIX": prefix}).key_prefix == prefix


@pytest.mark.parametrize(
    ("variable", "raw", "field", "expected"),
    [
        ("LISTENS_FRESH_SECONDS", "60", "fresh_s", 60),
        ("LISTENS_FRESH_SECONDS", " 1 ", "fresh_s", 1),
        ("LISTENS_FRESH_SECONDS", "604800", "fresh_s", 604800),
        ("LISTENS_MAX_STALE_SECONDS", "60", "max_stale_s", 60),
        ("LISTENS_MAX_STALE_SECONDS", "2592000", "max_stale_s", 2592000),
        ("LISTENS_ITEMS", "1", "items", 1),
        ("LISTENS_ITEMS", "50", "items", 50),
        ("LISTENS_CONCURRENCY", "1", "concurrency", 1),
        ("LISTENS_CONCURRENCY", "64", "concurrency", 64),
        ("LISTENS_REFRESH_SECONDS", "0", "refresh_s", 0),
        ("LISTENS_REFRESH_SECONDS", "1", "refresh_s", 1),
        ("LISTENS_REFRESH_SECONDS", "3600", "refresh_s", 3600),
        ("LISTENS_RATE", "0", "rate", 0.0),
        ("LISTENS_RATE", "2.5", "rate", 2.5),
        ("LISTENS_RATE", "1000", "rate", 1000.0),
        ("LISTENS_DEADLINE_SECONDS", "1", "deadline_s", 1.0),
        ("LISTENS_DEADLINE_SECONDS", "90.5", "deadline_s", 90.5),
        ("LISTENS_DEADLINE_SECONDS", "3600", "deadline_s", 3600.0),
    ],
)
def test_load_settings_parses_numeric_variable(variable, raw, field, expected):
    value = getattr(load_settings({variable: raw}), field)

    assert value == expected
    assert type(value) is type(expected)


# -- bad values ---------------------------------------------------------------------

BAD_INTEGERS = [
    "abc",
    "ten",
    "-",
    "+",
    "1 2",
    "0x10",
    "1e3",
    "1.5",
    "12abc",
    "nan",
    "-5",
    "99999999999999999999999",
    "5\n6",
]

OUT_OF_RANGE_INTEGERS = [
    ("LISTENS_FRESH_SECONDS", "0"),
    ("LISTENS_FRESH_SECONDS", "604801"),
    ("LISTENS_MAX_STALE_SECONDS", "59"),
    ("LISTENS_MAX_STALE_SECONDS", "2592001"),
    ("LISTENS_ITEMS", "0"),
    ("LISTENS_ITEMS", "51"),
    ("LISTENS_CONCURRENCY", "0"),
    ("LISTENS_CONCURRENCY", "65"),
    ("LISTENS_REFRESH_SECONDS", "3601"),
]

BAD_FLOATS = ["abc", "-", "1,5", "nan", "NaN", "inf", "-inf", "-1", "1e9", "5\n6"]

OUT_OF_RANGE_FLOATS = [
    ("LISTENS_RATE", "-0.1"),
    ("LISTENS_RATE", "1000.5"),
    ("LISTENS_DEADLINE_SECONDS", "0"),
    ("LISTENS_DEADLINE_SECONDS", "0.5"),
    ("LISTENS_DEADLINE_SECONDS", "3601"),
]


def rejected_numbers():
    """Yield (variable, raw, what the message must say) for every number the settings refuse."""
    for variables, bad in ((INTEGER_VARIABLES, BAD_INTEGERS), (FLOAT_VARIABLES, BAD_FLOATS)):
        for variable in variables:
            for raw in bad:
                yield pytest.param(variable, raw, None, id=f"{variable}={raw!r}")
    for variable, raw in (*OUT_OF_RANGE_INTEGERS, *OUT_OF_RANGE_FLOATS):
        yield pytest.param(variable, raw, "out of range", id=f"{variable}={raw!r}-out-of-range")


@pytest.mark.parametrize(("variable", "raw", "says"), list(rejected_numbers()))
def test_load_settings_rejects_bad_or_out_of_range_number(variable, raw, says):
    assert_refused(variable, raw, match=says)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        ",",
        " , ",
        "host",
        "host:port",
        "host:",
        ":11211",
        "host:0",
        "host:99999",
        "host:123456",
        "a:1,,b:2",
        "a:1,,b",
        "a:1;b:2",
        "a b:1",
        "http://host:11211",
        "host:11211\nother:11211",
    ],
)
def test_load_settings_rejects_bad_memcached_list(raw):
    assert_refused("LISTENS_MEMCACHED", raw)


@pytest.mark.parametrize(
    "raw",
    [
        "ws.audioscrobbler.com/2.0/",
        "ftp://ws.audioscrobbler.com/2.0/",
        "javascript:alert(1)",
        "https://",
        "https:///2.0/",
        "https://host name/2.0/",
        "https://host/2.0/?api_key=x",
        "https://host/2.0/#fragment",
        "not a url",
    ],
)
def test_load_settings_rejects_bad_lastfm_url(raw):
    assert_refused("LISTENS_LASTFM_URL", raw)


@pytest.mark.parametrize(
    "raw",
    ["has space", "a:b", "prefix/with/slash", "x" * 65, "ключ", "tab\there", "new\nline"],
)
def test_load_settings_rejects_bad_key_prefix(raw):
    assert_refused("LISTENS_KEY_PREFIX", raw)


def test_settings_error_exit_code_is_2():
    assert SettingsError.exit_code == 2


# -- the API key stays secret ----------------------------------------------------------


def test_settings_repr_hides_api_key():
    settings = load_settings({"LASTFM_API_KEY": SECRET})

    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)


def test_settings_require_lastfm_key_message_hides_nothing_secret_when_key_is_blank():
    settings = Settings(lastfm_api_key="")

    with pytest.raises(SettingsError) as caught:
        settings.require_lastfm_key()

    assert_one_line_naming(caught.value, "LASTFM_API_KEY")


# -- the Last.fm key requirement ----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://ws.audioscrobbler.com/2.0/",
        "https://ws.audioscrobbler.com/2.0",
        "http://ws.audioscrobbler.com/2.0/",
        "https://WS.AUDIOSCROBBLER.COM/2.0/",
    ],
)
def test_settings_require_lastfm_key_raises_when_url_is_the_real_one_without_key(url):
    settings = load_settings({"LISTENS_LASTFM_URL": url})

    with pytest.raises(SettingsError) as caught:
        settings.require_lastfm_key()

    assert_one_line_naming(caught.value, "LASTFM_API_KEY")


def test_settings_require_lastfm_key_raises_by_default():
    with pytest.raises(SettingsError, match="LASTFM_API_KEY"):
        load_settings({}).require_lastfm_key()


def test_settings_require_lastfm_key_passes_when_url_is_fake():
    load_settings({"LISTENS_LASTFM_URL": FAKE_URL}).require_lastfm_key()


def test_settings_require_lastfm_key_passes_when_key_is_set():
    load_settings({"LASTFM_API_KEY": SECRET}).require_lastfm_key()


# -- the lock file -------------------------------------------------------------------


def test_settings_lock_path_defaults_beside_the_database(tmp_path):
    database = tmp_path / "data" / "listens.sqlite3"

    lock_path = load_settings({"LISTENS_DATABASE": str(database)}).lock_path

    assert lock_path.parent == database.parent
    assert lock_path != database
    assert lock_path == Path(f"{database}.lock")


def test_settings_lock_path_is_explicit_when_lock_file_is_set(tmp_path):
    settings = Settings(database=tmp_path / "listens.sqlite3", lock_file=tmp_path / "other.lock")

    assert settings.lock_path == tmp_path / "other.lock"


# -- LISTENS_METRICS_FILE ---------------------------------------------------------


def test_load_settings_metrics_file_defaults_to_node_exporters_textfile_directory():
    assert load_settings({}).metrics_file == Path("/var/lib/prometheus/node-exporter/listens_warm.prom")


@pytest.mark.parametrize("blank", ["", "  "])
def test_load_settings_empty_metrics_file_turns_the_textfile_off(blank):
    assert load_settings({"LISTENS_METRICS_FILE": blank}).metrics_file is None


def test_load_settings_reads_metrics_file(tmp_path):
    path = tmp_path / "warm.prom"

    assert load_settings({"LISTENS_METRICS_FILE": f" {path} "}).metrics_file == path


@pytest.mark.parametrize("raw", ["/var/lib/prometheus/node-exporter/listens_warm.txt", "/tmp/", "/tmp/.prom"])
def test_load_settings_rejects_a_metrics_file_node_exporter_would_not_read(raw):
    with pytest.raises(SettingsError) as error:
        load_settings({"LISTENS_METRICS_FILE": raw})

    assert_one_line_naming(error.value, "LISTENS_METRICS_FILE")
    assert ".prom" in str(error.value)


@pytest.mark.parametrize("raw", ["soon", "-1", "1.5", "3601"])
def test_create_app_stops_with_one_line_when_refresh_seconds_is_invalid(raw, monkeypatch):
    monkeypatch.setenv("LISTENS_REFRESH_SECONDS", raw)

    with pytest.raises(SettingsError) as caught:
        create_app()

    assert_one_line_naming(caught.value, "LISTENS_REFRESH_SECONDS")
    assert "0 to 3600" in str(caught.value)

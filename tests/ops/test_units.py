"""The systemd units in deploy/systemd: systemd-analyze verify and security, and what they must say."""

from __future__ import annotations

import configparser
import re
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from app.core.settings import DEFAULT_METRICS_FILE
from app.core.settings import Settings
from tests.ops import analyze
from tests.support import REPO

APP_PREFIX = "/opt/listens/app/"
ENV_EXAMPLE = REPO / "deploy" / "listens.env.example"


@pytest.fixture(scope="module")
def unit_root(tmp_path_factory):
    """A throwaway root with the units installed and stand-ins for the programs they run."""
    root = analyze.prepare_os_root(tmp_path_factory.mktemp("root"))
    for program in analyze.APP_PROGRAMS:
        analyze.stub(root / program)
    analyze.install_units(root)
    return root


@pytest.fixture(scope="module")
def units():
    return {path.name: analyze.parse_unit(path) for path in analyze.UNIT_DIR.iterdir()}


def env_example() -> dict[str, str]:
    """Return the example environment file's settings, the commented-out defaults included."""
    settings = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(r"#?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match and (not line.startswith("#") or match.group(1) not in settings):
            settings[match.group(1)] = match.group(2)
    return settings


def test_units_pass_systemd_analyze_verify(unit_root):
    result = analyze.verify(unit_root, *analyze.UNITS)

    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_verify_fails_on_unknown_key_so_the_check_above_means_something(tmp_path):
    root = analyze.prepare_os_root(tmp_path)
    for program in analyze.APP_PROGRAMS:
        analyze.stub(root / program)
    analyze.install_units(root)
    unit = root / "etc" / "systemd" / "system" / "listens-warm.timer"
    unit.write_text(unit.read_text().replace("Persistent=true", "Persistant=true"))

    result = analyze.verify(root, "listens-warm.timer")

    assert result.returncode != 0 and "Persistant" in result.stderr


@pytest.mark.parametrize("unit", analyze.SERVICES)
def test_service_exposure_is_at_most_2_0(unit_root, unit):
    exposure, result = analyze.security(unit_root, unit)

    assert result.returncode == 0, result.stdout
    assert exposure <= analyze.MAX_EXPOSURE


@pytest.mark.parametrize("unit", ["listens-web.service", "listens-warm.service"])
def test_on_failure_instance_exists_and_verifies(unit_root, units, unit):
    # verify does not follow OnFailure=; load the very instance it would start.
    (target,) = analyze.values(units[unit], "Unit", "OnFailure")
    instance = target.replace("%n", unit)
    template = instance.split("@", 1)[0] + "@." + instance.rsplit(".", 1)[1]

    assert template in units
    result = analyze.verify(unit_root, instance)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_timer_starts_the_warm_service_every_5_minutes_on_the_clock(units):
    timer = units["listens-warm.timer"]

    assert analyze.value(timer, "Timer", "Unit") == "listens-warm.service" and "listens-warm.service" in units
    assert analyze.value(timer, "Timer", "Persistent") == "true"
    assert analyze.seconds(analyze.value(timer, "Timer", "AccuracySec")) <= 1
    assert analyze.seconds(analyze.value(timer, "Timer", "RandomizedDelaySec") or "0") == 0
    assert analyze.value(timer, "Install", "WantedBy") == "timers.target"
    calendar = subprocess.run(
        [analyze.systemd_analyze(), "calendar", "--iterations=4", analyze.value(timer, "Timer", "OnCalendar")],
        capture_output=True,
        text=True,
        timeout=30,
        env={"TZ": "UTC", "PATH": "/usr/bin:/bin"},
    )
    elapses = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", calendar.stdout)
    moments = [datetime.strptime(text, "%Y-%m-%d %H:%M:%S") for text in elapses]
    assert len(moments) == 4, calendar.stdout
    assert all(moment.minute % 5 == 0 and moment.second == 0 for moment in moments)
    assert all((later - earlier).total_seconds() == 300 for earlier, later in zip(moments, moments[1:], strict=False))


def test_warm_service_is_a_oneshot_that_times_out_after_the_run_deadline(units):
    warm = units["listens-warm.service"]
    deadline_s = float(env_example().get("LISTENS_DEADLINE_SECONDS", Settings().deadline_s))

    assert analyze.value(warm, "Service", "Type") == "oneshot"
    assert analyze.seconds(analyze.value(warm, "Service", "TimeoutStartSec")) > max(deadline_s, Settings().deadline_s)
    assert analyze.value(warm, "Service", "ExecStart") == "/opt/listens/app/venv/bin/listens-warm"
    assert analyze.values(warm, "Service", "SuccessExitStatus") == []


def test_web_service_is_gunicorn_with_the_deploy_config_and_reloads_gracefully(units):
    web = units["listens-web.service"]

    assert analyze.value(web, "Service", "Type") == "notify"
    assert analyze.value(web, "Service", "ExecStart") == (
        "/opt/listens/app/venv/bin/gunicorn --config /opt/listens/app/deploy/gunicorn.conf.py"
    )
    assert analyze.value(web, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert analyze.value(web, "Service", "KillMode") == "mixed"
    assert analyze.value(web, "Service", "Restart") == "on-failure"
    assert analyze.value(web, "Service", "UnsetEnvironment") == "LASTFM_API_KEY"


@pytest.mark.parametrize("unit", ["listens-web.service", "listens-warm.service"])
def test_service_runs_hardened_as_the_listens_user(units, unit):
    service = units[unit]
    expected = {
        "User": "listens",
        "Group": "listens",
        "EnvironmentFile": "/etc/listens/listens.env",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures": "native",
        "MemoryDenyWriteExecute": "yes",
    }

    assert {key: analyze.value(service, "Service", key) for key in expected} == expected
    assert analyze.values(service, "Service", "SystemCallFilter")[0] == "@system-service"
    for key in ("DynamicUser", "Capabilities", "PermissionsStartOnly"):
        assert analyze.values(service, "Service", key) == [], key
    # The warm job writes its metrics textfile, and nothing else outside its StateDirectory=.
    writable = [] if unit == "listens-web.service" else [f"-{DEFAULT_METRICS_FILE.parent}"]
    assert analyze.values(service, "Service", "ReadWritePaths") == writable


def test_only_the_warm_service_writes_and_only_the_database_lock_and_metrics_file(units):
    example = env_example()

    assert analyze.values(units["listens-web.service"], "Service", "StateDirectory") == []
    assert analyze.values(units["listens-warm.service"], "Service", "StateDirectory") == ["listens"]
    assert analyze.value(units["listens-warm.service"], "Service", "StateDirectoryMode") == "0700"
    assert example["LISTENS_DATABASE"].startswith("/var/lib/listens/")
    assert example["LISTENS_LOCK_FILE"].startswith("/var/lib/listens/")
    assert Path(example["LISTENS_METRICS_FILE"]) == DEFAULT_METRICS_FILE
    assert analyze.values(units["listens-warm.service"], "Service", "ReadWritePaths") == [
        f"-{Path(example['LISTENS_METRICS_FILE']).parent}"
    ]


def test_units_name_files_that_exist_in_the_release(units):
    named = []
    for name, unit in units.items():
        for section in unit.values():
            for key, text in section:
                named += [(name, key, word) for word in re.findall(r"(?:file:)?(/opt/listens/app/\S+)", text)]

    assert named
    for name, key, path in named:
        relative = path[len(APP_PREFIX) :]
        if relative.startswith("venv/bin/"):
            # The release's venv (deploy/install.sh): our console scripts, or a pinned requirement's.
            program = relative.removeprefix("venv/bin/")
            assert program in installed_programs(), f"{name} {key}= names {path}, which pip install . does not give"
        else:
            assert (REPO / relative).exists(), f"{name} {key}= names {path}, not in the repository"


def installed_programs() -> set[str]:
    """The console scripts setup.cfg declares, and gunicorn's, from the pinned requirements."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    scripts = config["options.entry_points"]["console_scripts"].split("\n")
    pinned = {line.split("==")[0] for line in (REPO / "requirements.txt").read_text().splitlines() if "==" in line}
    assert "gunicorn" in pinned
    return {line.split("=")[0].strip() for line in scripts if line.strip()} | {"gunicorn"}


def test_every_service_alerts_on_failure_and_stops_in_bounded_time(units):
    for name in ("listens-web.service", "listens-warm.service"):
        assert analyze.values(units[name], "Unit", "OnFailure") == ["listens-alert@%n.service"], name
    alert = units["listens-alert@.service"]
    assert analyze.value(alert, "Service", "Type") == "oneshot"
    assert analyze.seconds(analyze.value(alert, "Service", "TimeoutStartSec")) <= 60
    assert analyze.values(alert, "Unit", "OnFailure") == []


def test_memcached_conf_listens_on_loopback_only_with_udp_off():
    lines = (REPO / "deploy" / "memcached.conf").read_text().splitlines()
    options = [line.split() for line in lines if line.startswith("-")]
    flags = {option[0]: option[1:] for option in options}

    assert [option for option in options if option[0] == "-l"] == [["-l", "127.0.0.1"]]
    assert flags["-U"] == ["0"]
    assert flags["-u"] == ["memcache"]

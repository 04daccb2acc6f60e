"""deploy/install.sh into a throwaway root (DESTDIR): install, re-run, upgrade, rollback, and what it produced.

The script runs for real: it creates the user with `useradd --prefix` in the
root's own /etc/passwd, builds the package's wheel and installs it with
requirements.txt into a real virtualenv per release with pip, offline, from
wheels rebuilt from this interpreter's packages (tests/ops/wheelhouse.py).
Then systemd-analyze checks the installed units against the installed
programs, and the installed commands run: listens-warm, listens and gunicorn,
reloaded with HUP across a rollback that runs no pip.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.ops import analyze
from tests.support import REPO
from tests.support import TEST_API_KEY
from tests.support import FakeLastfm
from tests.support import free_port
from tests.support import run_service
from tests.support import service_env
from tests.support import wait_until
from tests.support.warmlog import summary_of

FIRST = "2026.12.01"
SECOND = "2026.12.15"
SECRET = "LASTFM_API_KEY=kept-across-upgrades"
# Host files the script must never touch when DESTDIR is set.
HOST_FILES = ("/etc/passwd", "/etc/group", "/etc/listens", "/etc/systemd/system/listens-web.service", "/opt/listens")


@dataclasses.dataclass
class Installation:
    root: Path
    runs: dict[str, subprocess.CompletedProcess]

    @property
    def top(self) -> Path:
        return self.root / "opt" / "listens"

    @property
    def venv(self) -> Path:
        """The current release's virtualenv, through the app symlink, as the units name it."""
        return self.app / "venv"

    @property
    def app(self) -> Path:
        return self.top / "app"


def host_state() -> dict[str, str]:
    state = {}
    for name in HOST_FILES:
        path = Path(name)
        state[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else str(path.exists())
    return state


def copy_checkout(target: Path) -> Path:
    """Copy what install.sh installs from the repository to target, which then serves as the checkout."""
    for name in ("app", "scripts", "deploy", "docs"):
        if (REPO / name).exists():
            shutil.copytree(REPO / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("requirements.txt", "README.md", "setup.cfg", "pyproject.toml"):
        shutil.copyfile(REPO / name, target / name)
    return target


def install(
    root: Path, wheels: Path | str, checkout: Path, *arguments: str, **nginx_env: str
) -> subprocess.CompletedProcess:
    """Run checkout's deploy/install.sh with arguments into the staging root; pip sees only wheels.

    nginx_env (NGINX_SERVER_NAME, NGINX_SITE) is the only NGINX_ setting the script sees.
    """
    # pip sees only the wheelhouse: no index, no machine-wide pip configuration.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "NGINX_"))}
    env.update(
        {
            "DESTDIR": str(root),
            "PYTHON": sys.executable,
            "PIP_INSTALL_ARGS": f"--no-index --find-links {wheels}",
            "PIP_CONFIG_FILE": os.devnull,
            **nginx_env,
        }
    )
    script = checkout / "deploy" / "install.sh"
    return subprocess.run(["bash", str(script), *arguments], env=env, capture_output=True, text=True, timeout=300)


def passwd_entry(root: Path, name: str) -> list[str] | None:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return fields
    return None


@pytest.fixture(scope="module")
def installation(tmp_path_factory, wheels, checkout) -> Installation:
    """Install FIRST, change the secret, upgrade to SECOND, then run SECOND again."""
    root = analyze.prepare_os_root(tmp_path_factory.mktemp("root"))
    before = host_state()
    runs = {"first": install(root, wheels, checkout, "--version", FIRST)}
    assert runs["first"].returncode == 0, runs["first"].stdout + runs["first"].stderr
    settings = root / "etc" / "listens" / "listens.env"
    settings.write_text(settings.read_text().replace("LASTFM_API_KEY=\n", SECRET + "\n"))
    runs["upgrade"] = install(root, wheels, checkout, "--version", SECOND)
    runs["again"] = install(root, wheels, checkout, "--version", SECOND)
    assert host_state() == before
    return Installation(root, runs)


def test_install_runs_succeed_and_say_what_to_do_next(installation):
    runs = installation.runs

    assert [run.returncode for run in runs.values()] == [0, 0, 0], [run.stderr for run in runs.values()]
    assert "systemctl enable --now listens-web.service listens-warm.timer" in runs["first"].stdout
    assert f"Upgraded listens: /opt/listens/app -> releases/{SECOND} (was releases/{FIRST}" in runs["upgrade"].stdout
    assert "systemctl reload listens-web" in runs["upgrade"].stdout
    assert f"release {SECOND} is already installed and unchanged" in runs["again"].stdout
    assert f"listens {SECOND} was already the current release; nothing to reload." in runs["again"].stdout
    commands = [line for line in runs["first"].stdout.splitlines() if line.startswith("+ ")]
    assert commands and not any("systemctl" in line for line in commands)


def test_install_switches_app_and_keeps_the_previous_release(installation):
    releases = installation.top / "releases"

    assert os.readlink(installation.app) == f"releases/{SECOND}"
    assert os.readlink(installation.top / "previous") == f"releases/{FIRST}"
    assert sorted(path.name for path in releases.iterdir()) == [FIRST, SECOND]
    assert (releases / SECOND / "RELEASE").read_text().startswith(f"version={SECOND}\n")


def site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def test_each_release_has_its_own_venv_with_the_wheel_compiled_and_nothing_local(installation):
    releases = installation.top / "releases"
    release = releases / SECOND

    for name in ("deploy/gunicorn.conf.py", "deploy/install.sh", "requirements.txt", "venv/bin/listens"):
        assert (release / name).is_file(), name
    # The code is the wheel's, installed in the venv; no source tree beside it.
    for name in (".venv", ".git", "instance", "tests", "app", "scripts", "devtools"):
        assert not (release / name).exists(), name
    # Nor the fake Last.fm server, a development tool, anywhere in the release.
    assert not [path for path in release.rglob("*fake_lastfm*")], release
    assert [wheel.name for wheel in (release / "dist").iterdir()] == ["listens-1.0.0-py3-none-any.whl"]
    tag = sys.implementation.cache_tag
    assert (site_packages(release / "venv") / "app" / "web" / "__pycache__" / f"reader.{tag}.pyc").is_file()
    assert (site_packages(release / "venv") / "app" / "web" / "templates" / "home.html").is_file()
    for version in (FIRST, SECOND):
        assert (releases / version / "venv" / "bin" / "listens-warm").is_file(), version
    assert not (installation.top / "venv").exists()
    assert not any(path.stat().st_mode & stat.S_IWOTH for path in release.rglob("*") if not path.is_symlink())


def test_install_keeps_the_settings_file_and_its_mode(installation):
    settings = installation.root / "etc" / "listens" / "listens.env"
    example = installation.root / "etc" / "listens" / "listens.env.example"

    assert SECRET in settings.read_text().splitlines()
    assert stat.S_IMODE(settings.stat().st_mode) == 0o640
    shipped = installation.top / "releases" / SECOND / "deploy" / "listens.env.example"
    assert example.read_text() == shipped.read_text()
    assert "kept " in installation.runs["upgrade"].stdout


def test_install_creates_the_service_user_and_its_state_directory(installation):
    root = installation.root
    state = root / "var" / "lib" / "listens"

    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    if os.geteuid() != 0:
        assert "not root: user listens not created" in installation.runs["first"].stdout
        return
    user = passwd_entry(root, "listens")
    assert user is not None and user[5:] == ["/var/lib/listens", "/usr/sbin/nologin"]
    assert int(user[2]) < 1000, "not a system account"
    assert (state.stat().st_uid, state.stat().st_gid) == (int(user[2]), int(user[3]))
    settings = (root / "etc" / "listens" / "listens.env").stat()
    assert (settings.st_uid, settings.st_gid) == (0, int(user[3]))
    assert sum(1 for line in (root / "etc" / "passwd").read_text().splitlines() if line.startswith("listens:")) == 1


def test_installed_units_are_the_checkouts(installation, checkout):
    installed = installation.root / "etc" / "systemd" / "system"

    for unit in (checkout / "deploy" / "systemd").iterdir():
        assert (installed / unit.name).read_text() == unit.read_text(), unit.name
        assert stat.S_IMODE((installed / unit.name).stat().st_mode) == 0o644


def provide_base_interpreter(root: Path, python: Path) -> None:
    """Stand in, inside root, for the interpreter the venv's python links to.

    A venv's bin/python is a symlink to the Python it was made from (on the
    target, /usr/bin/python3 from Debian's python3). systemd-analyze --root
    follows it inside the root, where the operating system's files are
    stand-ins, like kill and logger.
    """
    link = python
    while link.is_symlink():
        target = Path(os.readlink(link))
        if target.is_absolute():
            analyze.stub(root / target.relative_to("/"))
            return
        link = link.parent / target


def test_installed_units_verify_against_the_installed_programs(installation):
    provide_base_interpreter(installation.root, installation.venv / "bin" / "python")

    result = analyze.verify(installation.root, *analyze.UNITS)

    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr
    for program in analyze.APP_PROGRAMS:
        assert (installation.root / program).stat().st_size > 0, f"{program} is a stand-in, not installed"
    for unit in ("listens-web.service", "listens-warm.service"):
        exposure, process = analyze.security(installation.root, unit)
        assert process.returncode == 0 and exposure <= analyze.MAX_EXPOSURE


def run_installed(installation: Installation, env: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    """Run one of the installed commands as the units do, from another directory (HOME)."""
    return run_service([str(installation.venv / "bin" / command[0]), *command[1:]], env, cwd=Path(env["HOME"]))


def workers_of(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry.name))
    return children


def read_workers(pid: int, read) -> Iterator:
    """Yield read(worker pid) for each worker of the arbiter pid, passing over one that is gone meanwhile."""
    for worker in workers_of(pid):
        try:
            found = read(worker)
        except OSError:
            continue
        yield found


def serving_release(pid: int) -> set[str]:
    """Return the release directories the arbiter's workers run in (gunicorn chdirs into app)."""
    return {Path(cwd).name for cwd in read_workers(pid, lambda worker: os.readlink(f"/proc/{worker}/cwd"))}


def importing_from(pid: int) -> set[str]:
    """Return the releases whose venv the arbiter's workers loaded C extensions from (markupsafe's, via Flask)."""
    releases = set()
    for maps in read_workers(pid, lambda worker: Path(f"/proc/{worker}/maps").read_text()):
        for line in maps.splitlines():
            path = line.split(maxsplit=5)[-1]
            if "/releases/" in path and "/venv/" in path and path.endswith(".so"):
                releases.add(path.split("/releases/", 1)[1].split("/", 1)[0])
    return releases


def test_installed_code_warms_serves_reports_and_reloads_across_a_rollback(installation, wheels, memcached, tmp_path):
    lastfm = FakeLastfm().start()
    port = free_port()
    env = {
        "LASTFM_API_KEY": TEST_API_KEY,
        "LISTENS_MEMCACHED": memcached.address,
        "LISTENS_LASTFM_URL": lastfm.url,
        "LISTENS_DATABASE": str(tmp_path / "listens.sqlite3"),
        "LISTENS_RATE": "0",
        "LISTENS_BIND": f"127.0.0.1:{port}",
        "LISTENS_WORKERS": "2",
        "HOME": str(tmp_path),
    }
    log = open(tmp_path / "gunicorn.log", "wb")
    web = None
    try:
        added = run_installed(installation, env, "listens", "users", "add", "alice", "--lastfm", "alice")
        assert added.returncode == 0, added.stderr
        warm = run_installed(installation, env, "listens-warm")
        assert warm.returncode == 0 and summary_of(warm.stderr)["outcome"] == "published", warm.stderr
        status = run_installed(installation, env, "listens", "listens", "status")
        assert status.returncode == 0 and "state:        fresh" in status.stdout, status.stdout + status.stderr

        web = subprocess.Popen(
            [
                str(installation.venv / "bin" / "gunicorn"),
                "--config",
                str(installation.app / "deploy" / "gunicorn.conf.py"),
            ],
            cwd=tmp_path,
            env=service_env(env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}/api/internal/user-listens"
        wait_until(
            lambda: web.poll() is None and requests.get(url, timeout=2).json()["state"] == "fresh",
            30,
            "installed gunicorn",
        )
        wait_until(lambda: serving_release(web.pid) == {SECOND}, 10, f"workers in {SECOND}")
        assert importing_from(web.pid) == {SECOND}

        for target, current in ((FIRST, SECOND), (SECOND, FIRST)):
            # Run as the README says: the installed release's own copy of the script. No network,
            # no wheels: pip could install nothing, and the rollback must not need it.
            rollback = install(installation.root, tmp_path / "no-wheels", installation.app, "--rollback")
            assert rollback.returncode == 0, rollback.stdout + rollback.stderr
            assert not any("pip" in line for line in rollback.stdout.splitlines() if line.startswith("+ "))
            assert os.readlink(installation.app) == f"releases/{target}"
            assert os.readlink(installation.top / "previous") == f"releases/{current}"
            # systemctl reload listens-web: HUP to the arbiter, workers replaced gracefully.
            os.kill(web.pid, signal.SIGHUP)

            def moved():
                assert requests.get(url, timeout=2).status_code == 200
                # The new workers import from the target release's own venv, not the arbiter's.
                return serving_release(web.pid) == {target} == importing_from(web.pid)  # noqa: B023

            wait_until(moved, 30, f"workers in {target} after HUP")
    finally:
        if web is not None and web.poll() is None:
            web.terminate()
            web.wait(timeout=30)
        log.close()
        lastfm.stop()
    assert "Traceback" not in (tmp_path / "gunicorn.log").read_text()


def test_install_refuses_to_change_the_current_release_in_place(installation, wheels, tmp_path):
    # Another tree under the running release's name: the script must not swap code under the service.
    source = copy_checkout(tmp_path)
    (source / "app" / "changed.py").write_text("CHANGED = True\n")
    current = os.readlink(installation.app)

    version = current.split("/", 1)[1]

    result = install(installation.root, wheels, source, "--version", version)

    assert result.returncode == 1 and "is the current one" in result.stderr
    assert os.readlink(installation.app) == current
    assert not (installation.top / current / "app" / "changed.py").exists()
    assert not any(path.name.startswith(".staging") for path in (installation.top / "releases").iterdir())

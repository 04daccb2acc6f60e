"""`pip install .` into a fresh virtualenv, then the installed commands, run from another directory.

pip works offline: the pinned requirements and the build backend come from
wheels rebuilt from this interpreter's packages (tests/ops/wheelhouse.py).
The source is a copy of the repository, so the build leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ops.wheelhouse import add_build_backend
from tests.ops.wheelhouse import build_wheelhouse
from tests.support import REPO
from tests.support import free_port
from tests.support import run_service

# What a copy of the repository leaves out: local environments and caches, not sources.
_LOCAL = (".git", ".venv*", "__pycache__", ".pytest_cache", "build", "dist", "*.egg-info", "instance", "artifacts")


def offline_pip_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtualenv with the repository installed by `pip install .`."""
    wheels = build_wheelhouse(REPO / "requirements.txt", tmp_path_factory.mktemp("wheels"))
    add_build_backend(wheels)
    source = tmp_path_factory.mktemp("source") / "listens"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*_LOCAL))
    target = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True, timeout=120)
    pip = [str(target / "bin" / "pip"), "install", "--disable-pip-version-check", "--no-index", "--find-links"]
    result = subprocess.run(
        [*pip, str(wheels), "."], cwd=source, env=offline_pip_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return target


def run(venv: Path, cwd: Path, env: dict[str, str], *command: str) -> subprocess.CompletedProcess:
    return run_service([str(venv / "bin" / command[0]), *command[1:]], env, cwd=cwd, timeout_s=60)


def test_listens_help_lists_the_apps_commands_without_app_option(venv, tmp_path):
    result = run(venv, tmp_path, {}, "listens", "--help")

    assert result.returncode == 0, result.stderr
    commands = result.stdout.split("Commands:", 1)[1].split()
    for command in ("users", "listens", "run"):
        assert command in commands, result.stdout
    listens = run(venv, tmp_path, {}, "listens", "listens", "--help")
    assert listens.returncode == 0 and "purge-legacy" in listens.stdout and "status" in listens.stdout


def test_listens_users_manages_the_database_named_by_the_environment(venv, tmp_path):
    env = {"LISTENS_DATABASE": str(tmp_path / "members.sqlite3")}

    added = run(venv, tmp_path, env, "listens", "users", "add", "alice", "--lastfm", "alice_fm")
    listed = run(venv, tmp_path, env, "listens", "users", "list")

    assert added.returncode == 0, added.stderr
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split("\t")[:3] == ["alice", "alice_fm", "public"]
    assert (tmp_path / "members.sqlite3").is_file()


def test_installed_package_is_the_venvs_and_carries_templates_and_static_files(venv, tmp_path):
    # memcached on a closed port: the page still renders (unavailable), from the installed templates.
    env = {"LISTENS_MEMCACHED": f"127.0.0.1:{free_port()}"}
    script = (
        "import app, pathlib\n"
        "client = app.create_app().test_client()\n"
        "page = client.get('/')\n"
        "style = client.get('/static/style.css')\n"
        "print(pathlib.Path(app.__file__).parent)\n"
        "print(page.status_code, b'unavailable' in page.data.lower(), style.status_code)\n"
    )

    result = run(venv, tmp_path, env, "python", "-c", script)

    assert result.returncode == 0, result.stderr
    location, checks = result.stdout.splitlines()[-2:]
    assert Path(location).is_relative_to(venv), location
    assert checks == "200 True 200", result.stdout


def test_listens_warm_exits_2_with_one_line_when_the_real_lastfm_has_no_key(venv, tmp_path):
    env = {"LISTENS_DATABASE": str(tmp_path / "members.sqlite3")}

    result = run(venv, tmp_path, env, "listens-warm")

    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "LASTFM_API_KEY is not set" in lines[0], result.stderr
    assert "level=ERROR logger=app.warm" in lines[0]
    assert result.stdout == ""


def test_installed_package_carries_no_fake_lastfm(venv, tmp_path):
    # The fake Last.fm server is a development tool (devtools/): never on a server.
    script = (
        "import importlib.metadata, importlib.util\n"
        "files = [str(path) for path in importlib.metadata.distribution('listens').files]\n"
        "print(len(files), [path for path in files if 'fake' in path or path.startswith('devtools')])\n"
        "print(importlib.util.find_spec('devtools'), importlib.util.find_spec('app.fake_lastfm'))\n"
    )

    result = run(venv, tmp_path, {}, "python", "-c", script)

    assert result.returncode == 0, result.stderr
    listed, specs = result.stdout.splitlines()[-2:]
    count, fakes = listed.split(" ", 1)
    assert int(count) > 10 and fakes == "[]", result.stdout
    assert specs == "None None", result.stdout

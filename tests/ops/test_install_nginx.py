"""deploy/install.sh sets up the nginx site in a throwaway root (DESTDIR), checks it with nginx -t, and undoes a bad one.

The root gets a copy of Debian's /etc/nginx as the nginx package installs it
(sites-enabled/default included) and nginx's user; the script then runs for
real, with the release, venv and units as in tests/ops/test_install.py.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.ops import analyze
from tests.ops.test_install import install
from tests.support import NGINX_SITE
from tests.support import SERVER_NAME

NAME = "listens.test"
NGINX_USER = ("www-data", 33, 33)
# Host files the script must never touch when DESTDIR is set.
HOST_PATHS = ("/etc/nginx/sites-enabled", "/etc/nginx/sites-available", "/var/cache/nginx")


def host_state() -> dict[str, list[str]]:
    return {name: sorted(os.listdir(name)) if os.path.isdir(name) else [] for name in HOST_PATHS}


def make_root(root: Path) -> Path:
    """Lay out a staging root with Debian's nginx configuration and nginx's user."""
    analyze.prepare_os_root(root)
    shutil.copytree("/etc/nginx", root / "etc" / "nginx", symlinks=True)
    user, uid, gid = NGINX_USER
    (root / "etc" / "passwd").write_text(
        f"root:x:0:0:root:/root:/bin/bash\n{user}:x:{uid}:{gid}::/var/www:/usr/sbin/nologin\n"
    )
    (root / "etc" / "group").write_text(f"root:x:0:\n{user}:x:{gid}:\n")
    return root


def nginx_check(root: Path, scratch: Path) -> subprocess.CompletedProcess:
    """Run nginx -t, independently of install.sh, on a copy of root's /etc/nginx with its paths moved into root."""
    shutil.copytree(root / "etc" / "nginx", scratch, symlinks=True)
    moves = {
        "/etc/nginx/": f"{scratch}/",
        "/etc/letsencrypt/": f"{root}/etc/letsencrypt/",
        "/var/cache/nginx/": f"{root}/var/cache/nginx/",
        "/var/log/nginx/": f"{scratch}/",
        "/run/nginx.pid": f"{scratch}/nginx.pid",
    }
    for path in scratch.rglob("*"):
        if path.is_symlink() and os.readlink(path).startswith("/etc/nginx/"):
            target = os.readlink(path)
            path.unlink()
            path.symlink_to(f"{scratch}/{target.removeprefix('/etc/nginx/')}")
        elif path.is_file() and not path.is_symlink():
            text = path.read_text(errors="surrogateescape")
            for old, new in moves.items():
                text = text.replace(old, new)
            path.write_text(text, errors="surrogateescape")
    command = ["nginx", "-t", "-p", f"{scratch}/", "-c", f"{scratch}/nginx.conf", "-e", f"{scratch}/error.log"]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def rendered(site: Path, name: str) -> str:
    return site.read_text().replace(SERVER_NAME, name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory, wheels, checkout):
    """Install with NGINX_SERVER_NAME, then again without it; return the root and both runs."""
    root = make_root(tmp_path_factory.mktemp("root"))
    before = host_state()
    first = install(root, wheels, checkout, "--version", "2026.12.01", NGINX_SERVER_NAME=NAME)
    again = install(root, wheels, checkout, "--version", "2026.12.01")
    assert host_state() == before
    return root, first, again


def test_install_puts_the_site_in_place_and_nginx_t_passes(installed, tmp_path):
    root, first, _ = installed
    nginx = root / "etc" / "nginx"

    assert first.returncode == 0, first.stdout + first.stderr
    assert "nginx -t: the configuration with the listens site is valid" in first.stdout
    site = nginx / "sites-available" / "listens"
    assert site.read_text() == rendered(NGINX_SITE, NAME)
    assert f"server_name {NAME};" in site.read_text() and SERVER_NAME not in site.read_text()
    assert stat.S_IMODE(site.stat().st_mode) == 0o644
    assert os.readlink(nginx / "sites-enabled" / "listens") == "../sites-available/listens"
    # Debian's placeholder would be a second default server.
    assert not (nginx / "sites-enabled" / "default").exists()
    assert (nginx / "sites-available" / "default").is_file()
    check = nginx_check(root, tmp_path / "check")
    assert check.returncode == 0, check.stderr


def test_install_gives_the_cache_directory_to_nginxs_user(installed):
    root, _, _ = installed
    cache = root / "var" / "cache" / "nginx" / "listens"

    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    if os.geteuid() == 0:
        assert (cache.stat().st_uid, cache.stat().st_gid) == NGINX_USER[1:]


def test_second_install_keeps_the_server_name_and_changes_nothing(installed):
    root, _, again = installed

    assert again.returncode == 0, again.stdout + again.stderr
    assert "already installed and unchanged" in again.stdout
    assert (root / "etc" / "nginx" / "sites-available" / "listens").read_text() == rendered(NGINX_SITE, NAME)


def test_failed_nginx_t_restores_the_previous_configuration_and_exits_1(installed, wheels, checkout, tmp_path):
    root = make_root(tmp_path / "root")
    assert install(root, wheels, checkout, "--version", "2026.12.01", NGINX_SERVER_NAME=NAME).returncode == 0
    nginx = root / "etc" / "nginx"
    before = {path: path.read_text() for path in (nginx / "sites-available").iterdir()}

    # HTTPS before the certificate exists: nginx -t cannot load it.
    failed = install(root, wheels, checkout, "--version", "2026.12.01", NGINX_SITE="listens-tls")

    assert failed.returncode == 1
    assert "nginx -t failed with the new listens site" in failed.stderr
    assert "previous nginx configuration was put back" in failed.stderr
    assert f"/etc/letsencrypt/live/{NAME}/fullchain.pem" in failed.stderr
    assert {path: path.read_text() for path in (nginx / "sites-available").iterdir()} == before
    assert os.readlink(nginx / "sites-enabled" / "listens") == "../sites-available/listens"
    assert nginx_check(root, tmp_path / "check").returncode == 0


def test_tls_site_installs_with_its_certificate(wheels, checkout, tmp_path):
    root = make_root(tmp_path / "root")
    live = root / "etc" / "letsencrypt" / "live" / NAME
    live.mkdir(parents=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={NAME}"]
        + ["-keyout", str(live / "privkey.pem"), "-out", str(live / "fullchain.pem")],
        check=True,
        capture_output=True,
        timeout=60,
    )

    run = install(
        root,
        wheels,
        checkout,
        "--version",
        "2026.12.01",
        NGINX_SERVER_NAME=f"{NAME} www.{NAME}",
        NGINX_SITE="listens-tls",
    )

    assert run.returncode == 0, run.stdout + run.stderr
    site = (root / "etc" / "nginx" / "sites-available" / "listens").read_text()
    assert f"server_name {NAME} www.{NAME};" in site
    assert f"ssl_certificate /etc/letsencrypt/live/{NAME}/fullchain.pem;" in site
    assert nginx_check(root, tmp_path / "check").returncode == 0
    # An upgrade without the settings keeps the name and stays on HTTPS.
    again = install(root, wheels, checkout, "--version", "2026.12.01")
    assert again.returncode == 0 and "already installed and unchanged" in again.stdout
    assert (root / "etc" / "nginx" / "sites-available" / "listens").read_text() == site


@pytest.fixture(scope="module")
def bare(tmp_path_factory, wheels, checkout):
    """A root where listens is installed without NGINX_SERVER_NAME: Debian's nginx configuration as it was."""
    root = make_root(tmp_path_factory.mktemp("bare"))
    return root, install(root, wheels, checkout, "--version", "2026.12.01")


def test_install_without_a_server_name_says_what_to_set_and_leaves_nginx_alone(bare):
    root, run = bare
    nginx = root / "etc" / "nginx"

    assert run.returncode == 0, run.stdout + run.stderr
    assert "nginx site not installed: set NGINX_SERVER_NAME" in run.stdout
    assert os.readlink(nginx / "sites-enabled" / "default") == "/etc/nginx/sites-available/default"
    assert not (nginx / "sites-available" / "listens").exists()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NGINX_SERVER_NAME": NAME, "NGINX_SITE": "apache"}, "NGINX_SITE must be listens or listens-tls"),
        ({"NGINX_SERVER_NAME": "evil;name"}, "NGINX_SERVER_NAME 'evil;name' must be host names"),
    ],
)
def test_install_with_a_bad_nginx_setting_exits_1_saying_what_to_fix(env, message, bare, wheels, checkout):
    root, _ = bare

    run = install(root, wheels, checkout, "--version", "2026.12.01", **env)

    assert run.returncode == 1 and message in run.stderr
    assert not (root / "etc" / "nginx" / "sites-available" / "listens").exists()


def test_failed_first_install_puts_debians_default_site_back(bare, wheels, checkout):
    root, _ = bare
    nginx = root / "etc" / "nginx"

    failed = install(
        root, wheels, checkout, "--version", "2026.12.01", NGINX_SERVER_NAME=NAME, NGINX_SITE="listens-tls"
    )

    assert failed.returncode == 1 and "nginx -t failed" in failed.stderr
    assert os.readlink(nginx / "sites-enabled" / "default") == "/etc/nginx/sites-available/default"
    assert not (nginx / "sites-enabled" / "listens").exists() and not (nginx / "sites-available" / "listens").exists()


def test_nginx_t_failing_before_any_change_installs_nothing(bare, wheels, checkout):
    root, _ = bare
    broken = root / "etc" / "nginx" / "conf.d" / "broken.conf"
    broken.write_text("this is not nginx;\n")
    try:
        failed = install(root, wheels, checkout, "--version", "2026.12.01", NGINX_SERVER_NAME=NAME)
    finally:
        broken.unlink()

    assert failed.returncode == 1
    assert "nginx -t fails before any change" in failed.stderr and f"{broken}:1" in failed.stderr
    assert not (root / "etc" / "nginx" / "sites-available" / "listens").exists()

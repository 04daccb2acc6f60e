#!/usr/bin/env bash
# Install the Debian packages the project needs, only those that are missing:
# memcached (the cache), and what pip needs to build pylibmc and create a venv.
# Extra package names given as arguments are installed too when missing.
set -euo pipefail

missing=()
for package in "$@"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
command -v memcached >/dev/null 2>&1 || missing+=(memcached)
# tests/frontdoor run Debian's nginx in front of gunicorn (deploy/nginx), and
# make a self-signed certificate for its TLS variant with openssl. (Debian
# also starts its own nginx on port 80; the tests never use it.)
[ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# The browser tests drive Debian's Chromium; a browser is never downloaded.
[ -x /usr/bin/chromium ] || missing+=(chromium)
# A small CJK font, so names like 坂本龍一 render in the README's screenshots.
dpkg -s fonts-wqy-microhei >/dev/null 2>&1 || missing+=(fonts-wqy-microhei)
# tests/ops: systemd-analyze verifies the units offline; install.sh runs useradd --prefix.
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v useradd >/dev/null 2>&1 || missing+=(passwd)
# tests/ops: promtool checks and unit-tests deploy/prometheus/listens-rules.yml.
# Debian ships it only in the prometheus package (no recommends: no
# node_exporter). On a machine running systemd the package also enables a
# local Prometheus server; `systemctl disable --now prometheus` if unwanted.
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# tests: a throwaway PostgreSQL server (initdb into a temporary folder) for the
# members store on PostgreSQL. (Debian also starts its own cluster; unused.)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
for package in libmemcached-dev zlib1g-dev gcc; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
[ -e "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] || missing+=(python3-dev)

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "installing Debian packages: ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "error: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

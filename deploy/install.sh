#!/usr/bin/env bash
# Install, upgrade or roll back listens on this machine (deploy/README.md).
#
#   sudo deploy/install.sh [--version VERSION]     from a checkout: install or upgrade
#   sudo /opt/listens/app/deploy/install.sh --rollback
#
# What it does, every step safe to repeat:
#   - creates the system user "listens" (no shell, no login) if it is missing;
#   - creates /opt/listens/releases/VERSION (root-owned; the services only
#     read it) with the deployment files (deploy/, docs/, requirements.txt),
#     builds the package's wheel from the checkout into its dist/, and
#     installs that wheel with the pinned requirements.txt into the release's
#     own virtualenv, VERSION/venv; then compiles its bytecode, which the
#     services cannot write under ProtectSystem=strict;
#   - switches /opt/listens/app to the new release with one atomic rename,
#     and points /opt/listens/previous at the release it replaced;
#   - installs the units into /etc/systemd/system, and /etc/listens/listens.env
#     from the example only when it does not exist (it holds the API key:
#     never overwritten, root:listens 0640);
#   - creates /var/lib/listens (members database and lock), listens-only;
#   - prints the next steps. It enables and starts nothing: the settings need
#     the API key first, and a reload is the sysadmin's call.
#
# Environment:
#   DESTDIR           install into this staging root instead of /: everything is
#                     written under it, the user is added to $DESTDIR/etc/passwd
#                     with `useradd --prefix` (as root; otherwise only printed),
#                     and systemctl is never run. CI checks the units this way.
#   PREFIX            where the releases go (default /opt/listens); the units
#                     are rewritten to match.
#   PYTHON            the interpreter a release's venv is built from (default python3).
#   PIP_INSTALL_ARGS  extra pip arguments, e.g. "--no-index --find-links /srv/wheels"
#                     on a host without access to PyPI (the wheels of
#                     requirements.txt and of setuptools, which builds ours).
#   NGINX_SERVER_NAME the site's host name(s) for nginx, e.g. "listens.example.org";
#                     needed the first time, then read from the installed site.
#   NGINX_SITE        listens (HTTP) or listens-tls (HTTPS, with certbot's
#                     certificate for NGINX_SERVER_NAME); default: the one
#                     installed, else listens.
#
# nginx (deploy/nginx/, when /etc/nginx exists): the site goes into
# sites-available/listens and is linked from sites-enabled (Debian's
# placeholder site "default" is unlinked: both would be the default server),
# its cache directory /var/cache/nginx/listens is created for nginx's user,
# `nginx -t` checks the result, and nginx is reloaded only if it passed. If
# it fails, the previous nginx configuration is put back and the script
# exits 1 saying why; nginx itself is never left with a broken configuration.
#
# --rollback switches the symlinks back and installs the old release's units;
# it runs no pip: every release keeps its own virtualenv.
set -euo pipefail
umask 022

readonly SERVICE_USER=listens
readonly DEFAULT_PREFIX=/opt/listens
# What a release carries beside its venv; never the checkout's .venv, instance/ or .git.
readonly RELEASE_CONTENT=(deploy docs requirements.txt README.md)
# What the wheel is built from.
readonly BUILD_CONTENT=(app setup.cfg pyproject.toml requirements.txt README.md)

usage() {
    # The comment block at the top of this file.
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p;}' "$0"
}

log() {
    printf '%s\n' "$*"
}

die() {
    printf 'install.sh: error: %s\n' "$*" >&2
    exit 1
}

# Every command that changes the machine is echoed first, so the output is a
# record of what was done.
run() {
    printf '+ %s\n' "$*"
    "$@"
}

VERSION=""
ROLLBACK=0
while [ $# -gt 0 ]; do
    case "$1" in
        --version)
            [ $# -ge 2 ] || die "--version needs a value, e.g. --version 2026.12.01"
            VERSION=$2
            shift 2
            ;;
        --version=*)
            VERSION=${1#*=}
            shift
            ;;
        --rollback)
            ROLLBACK=1
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            die "unknown argument '$1'; see $0 --help"
            ;;
    esac
done

DESTDIR=${DESTDIR:-}
DESTDIR=${DESTDIR%/}
PREFIX=${PREFIX:-$DEFAULT_PREFIX}
PREFIX=${PREFIX%/}
PYTHON=${PYTHON:-python3}
read -r -a PIP_ARGS <<<"${PIP_INSTALL_ARGS:-}"
SOURCE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)

case "$DESTDIR" in
    "" | /*) ;;
    *) die "DESTDIR must be an absolute path, not '$DESTDIR'" ;;
esac
case "$PREFIX" in
    /?*) ;;
    *) die "PREFIX must be an absolute path such as $DEFAULT_PREFIX, not '$PREFIX'" ;;
esac
IS_ROOT=0
if [ "$(id -u)" -eq 0 ]; then
    IS_ROOT=1
fi
if [ -z "$DESTDIR" ] && [ $IS_ROOT -eq 0 ]; then
    die "run as root (sudo $0), or set DESTDIR to install into a staging root"
fi

TOP="$DESTDIR$PREFIX"
RELEASES="$TOP/releases"
APP="$TOP/app"
PREVIOUS="$TOP/previous"
ETC="$DESTDIR/etc/listens"
UNIT_DIR="$DESTDIR/etc/systemd/system"
STATE="$DESTDIR/var/lib/listens"
USER_ID=""
GROUP_ID=""
STAGE=""
# A release whose venv or wheel failed to install is removed, never left half-built.
PARTIAL=""
trap 'if [ -n "$STAGE" ]; then rm -rf "$STAGE"; fi; if [ -n "$PARTIAL" ]; then rm -rf "$PARTIAL"; fi' EXIT

if [ -n "$DESTDIR" ]; then
    log "DESTDIR=$DESTDIR: installing into a staging root; nothing outside it is changed and systemctl is not run"
fi
mkdir -p "$RELEASES"
# Two installs at once would race on the symlinks and the venv.
exec 9>"$TOP/.install.lock"
flock -n 9 || die "another install.sh is running on $TOP"

ensure_user() {
    local useradd=(useradd --system --user-group --home-dir /var/lib/listens --no-create-home --shell /usr/sbin/nologin)
    if [ -z "$DESTDIR" ]; then
        if ! getent passwd "$SERVICE_USER" >/dev/null; then
            run "${useradd[@]}" "$SERVICE_USER"
        fi
        USER_ID=$(id -u "$SERVICE_USER")
        GROUP_ID=$(getent group "$SERVICE_USER" | cut -d: -f3)
    elif [ $IS_ROOT -eq 1 ]; then
        mkdir -p "$DESTDIR/etc"
        if ! grep -q "^$SERVICE_USER:" "$DESTDIR/etc/passwd" 2>/dev/null; then
            run "${useradd[@]}" --prefix "$DESTDIR" "$SERVICE_USER"
        fi
        USER_ID=$(awk -F: -v name="$SERVICE_USER" '$1 == name { print $3 }' "$DESTDIR/etc/passwd")
        GROUP_ID=$(awk -F: -v name="$SERVICE_USER" '$1 == name { print $3 }' "$DESTDIR/etc/group")
    else
        log "not root: user $SERVICE_USER not created and no file handed to it; as root this runs:"
        log "  ${useradd[*]} --prefix $DESTDIR $SERVICE_USER"
    fi
}

default_version() {
    local git=(git -c "safe.directory=$SOURCE" -C "$SOURCE")
    if "${git[@]}" rev-parse --git-dir >/dev/null 2>&1; then
        local described
        described=$("${git[@]}" describe --tags --always)
        # Uncommitted changes get a time stamp: two different dirty trees must
        # never share a release name.
        if [ -n "$("${git[@]}" status --porcelain --untracked-files=no)" ]; then
            described="$described-dirty.$(date -u +%Y%m%d%H%M%S)"
        fi
        printf '%s\n' "$described"
    else
        date -u +%Y%m%d.%H%M%S
    fi
}

source_commit() {
    git -c "safe.directory=$SOURCE" -C "$SOURCE" rev-parse HEAD 2>/dev/null || echo unknown
}

# A digest of what the wheel is built from, so an unchanged release is
# recognised without building it again (wheels are not byte-reproducible).
source_digest() {
    local item
    for item in "${BUILD_CONTENT[@]}"; do
        if [ -e "$SOURCE/$item" ]; then
            find "$SOURCE/$item" -name __pycache__ -prune -o -type f -print
        fi
    done | LC_ALL=C sort | while IFS= read -r file; do
        printf '%s  %s\n' "$(sha256sum <"$file" | cut -d' ' -f1)" "${file#"$SOURCE"/}"
    done | sha256sum | cut -d' ' -f1
}

# Put the release into place: the deployment files, then (install_venv) the
# wheel and its venv. An existing release of that name is kept when
# identical, replaced when it is not the current one, and never touched when
# it is (the services run it). Sets RELEASE_NEW=1 when a venv is to be built.
RELEASE_NEW=0
install_release() {
    local target="$RELEASES/$VERSION" current item
    current=$(readlink "$APP" 2>/dev/null || true)
    if [ ! -f "$SOURCE/setup.cfg" ] || [ ! -f "$SOURCE/app/__init__.py" ] || [ ! -f "$SOURCE/requirements.txt" ]; then
        die "$SOURCE is not a listens checkout (no app/__init__.py, setup.cfg or requirements.txt)"
    fi
    STAGE="$RELEASES/.staging.$VERSION.$$"
    mkdir "$STAGE"
    for item in "${RELEASE_CONTENT[@]}"; do
        if [ -e "$SOURCE/$item" ]; then
            cp -R "$SOURCE/$item" "$STAGE/"
        fi
    done
    find "$STAGE" -name __pycache__ -prune -exec rm -rf {} +
    chmod -R u=rwX,go=rX "$STAGE"
    printf 'version=%s\ncommit=%s\nsource=%s\n' "$VERSION" "$(source_commit)" "$(source_digest)" >"$STAGE/RELEASE"
    if [ -d "$target" ]; then
        if [ -x "$target/venv/bin/listens-warm" ] \
            && diff -r -q -x __pycache__ -x venv -x dist "$STAGE" "$target" >/dev/null; then
            log "release $VERSION is already installed and unchanged"
            rm -rf "$STAGE"
            STAGE=""
            return
        fi
        if [ "$current" = "releases/$VERSION" ]; then
            die "release $VERSION is the current one and $SOURCE differs from it; install under a new name with --version"
        fi
        run rm -rf "$target"
    fi
    run mv "$STAGE" "$target"
    STAGE=""
    RELEASE_NEW=1
}

# Build the wheel from a copy of the checkout (the build writes build/ and
# *.egg-info next to its sources) and install it, with the exact pinned
# requirements, into the release's own venv. The venv is created in its final
# place: a virtualenv cannot be moved.
install_venv() {
    local release=$1 build wheels item
    PARTIAL=$release
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
        || die "$PYTHON cannot create a virtualenv: apt-get install python3-venv (or set PYTHON)"
    run "$PYTHON" -m venv "$release/venv"
    build=$(mktemp -d "$RELEASES/.build.XXXXXX")
    STAGE=$build
    for item in "${BUILD_CONTENT[@]}"; do
        cp -R "$SOURCE/$item" "$build/"
    done
    find "$build" -name __pycache__ -prune -exec rm -rf {} +
    local pip=("$release/venv/bin/python" -m pip --disable-pip-version-check --no-input --quiet)
    run "${pip[@]}" wheel --no-deps "${PIP_ARGS[@]}" --wheel-dir "$release/dist" "$build"
    rm -rf "$build"
    STAGE=""
    wheels=("$release"/dist/*.whl)
    [ ${#wheels[@]} -eq 1 ] && [ -f "${wheels[0]}" ] || die "expected one wheel in $release/dist, found: ${wheels[*]}"
    run "${pip[@]}" install "${PIP_ARGS[@]}" -r "$release/requirements.txt" "${wheels[0]}"
    chmod -R u=rwX,go=rX "$release/dist"
    PARTIAL=""
}

compile_release() {
    local release=$1
    local compile=("$release/venv/bin/python" -m compileall -q)
    # Record the paths the code will have on the target, not the staging root's.
    if [ -n "$DESTDIR" ]; then
        compile+=(-s "$DESTDIR" -p /)
    fi
    run "${compile[@]}" "$release"
}

# Point app at releases/NAME with one rename(2), so nothing ever sees it
# missing; previous keeps the release it pointed at for --rollback.
switch_to() {
    local new=$1 old
    old=$(readlink "$APP" 2>/dev/null || true)
    if [ -e "$APP" ] && [ ! -L "$APP" ]; then
        die "$APP is not a symlink; move it aside (it is not managed by install.sh)"
    fi
    if [ "$old" = "$new" ]; then
        return
    fi
    run ln -sfn "$new" "$APP.new"
    run mv -T "$APP.new" "$APP"
    if [ -n "$old" ]; then
        run ln -sfn "$old" "$PREVIOUS.new"
        run mv -T "$PREVIOUS.new" "$PREVIOUS"
    fi
}

UNITS_CHANGED=0
install_units() {
    local release=$1 unit name rendered
    mkdir -p "$UNIT_DIR"
    for unit in "$release"/deploy/systemd/*; do
        name=$(basename "$unit")
        # The units name /opt/listens; another PREFIX is written into them.
        rendered=$(sed "s|$DEFAULT_PREFIX/|$PREFIX/|g" "$unit")
        if [ ! -f "$UNIT_DIR/$name" ] || [ "$rendered" != "$(cat "$UNIT_DIR/$name")" ]; then
            log "+ install -m 0644 $name $UNIT_DIR/"
            printf '%s\n' "$rendered" >"$UNIT_DIR/$name.new"
            chmod 0644 "$UNIT_DIR/$name.new"
            mv -f "$UNIT_DIR/$name.new" "$UNIT_DIR/$name"
            UNITS_CHANGED=1
        fi
    done
}

ENV_CREATED=0
install_settings() {
    local release=$1 example="$1/deploy/listens.env.example" mode
    run install -d -m 0755 "$ETC"
    if [ -e "$ETC/listens.env" ]; then
        log "kept $ETC/listens.env as it is; new settings are listed in $ETC/listens.env.example"
        mode=$(stat -c %a "$ETC/listens.env")
        case "$mode" in
            600 | 640) ;;
            *) log "warning: $ETC/listens.env has mode $mode but holds the API key: chmod 0640 it" >&2 ;;
        esac
    elif [ -n "$GROUP_ID" ]; then
        run install -m 0640 -o 0 -g "$GROUP_ID" "$example" "$ETC/listens.env"
        ENV_CREATED=1
    else
        run install -m 0640 "$example" "$ETC/listens.env"
        ENV_CREATED=1
    fi
    run install -m 0644 "$example" "$ETC/listens.env.example"
    if [ -n "$USER_ID" ]; then
        run install -d -m 0700 -o "$USER_ID" -g "$GROUP_ID" "$STATE"
    else
        run install -d -m 0700 "$STATE"
    fi
}

reload_units() {
    if [ $UNITS_CHANGED -eq 0 ]; then
        return
    fi
    if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
        run systemctl daemon-reload
    else
        log "units changed: run 'systemctl daemon-reload' on the target"
    fi
}

# -- nginx: the front door (deploy/nginx, deploy/README.md) ------------------

NGINX_DIR="$DESTDIR/etc/nginx"
NGINX_CACHE="$DESTDIR/var/cache/nginx/listens"
# The host name the site files carry, replaced by NGINX_SERVER_NAME.
readonly NGINX_PLACEHOLDER=listens.example.org

# Run `nginx -t` on the configuration in NGINX_DIR; print its output, return its status.
# Into a staging root, nginx -t reads a copy of it whose paths point into the
# root (and whose logs and pid file go to a scratch directory), so nothing
# outside DESTDIR is read as configuration or written.
nginx_test() {
    if [ -z "$DESTDIR" ]; then
        nginx -t 2>&1
        return
    fi
    local scratch link target status=0
    scratch=$(mktemp -d)
    cp -a "$NGINX_DIR/." "$scratch/"
    while IFS= read -r link; do
        target=$(readlink "$link")
        case "$target" in
            /etc/nginx/*) ln -sfn "$scratch/${target#/etc/nginx/}" "$link" ;;
        esac
    done < <(find "$scratch" -type l)
    grep -rlZ -e /etc/nginx/ -e /etc/letsencrypt/ -e /var/cache/nginx/ -e /var/log/nginx/ -e /run/nginx.pid "$scratch" \
        | xargs -0 -r sed -i -e "s|/etc/nginx/|$scratch/|g" -e "s|/etc/letsencrypt/|$DESTDIR/etc/letsencrypt/|g" \
            -e "s|/var/cache/nginx/|$DESTDIR/var/cache/nginx/|g" \
            -e "s|/var/log/nginx/|$scratch/|g" -e "s|/run/nginx.pid|$scratch/nginx.pid|g"
    # Its messages name the files by where they are in the staging root.
    nginx -t -p "$scratch/" -c "$scratch/nginx.conf" -e "$scratch/error.log" 2>&1 | sed "s|$scratch/|$NGINX_DIR/|g" \
        || status=$?
    rm -rf "$scratch"
    return $status
}

# The lines of nginx -t's output that say what is wrong, on one line.
nginx_reason() {
    local reason
    reason=$(grep -E '\[(emerg|alert|crit|error)\]' <<<"$1" | sed 's/^nginx: //' | paste -sd ';' - || true)
    printf '%s\n' "${reason:-$(tail -n 1 <<<"$1")}"
}

# uid:gid of user (in the staging root's /etc/passwd under DESTDIR), or nothing.
nginx_owner() {
    if [ -n "$DESTDIR" ]; then
        awk -F: -v name="$1" '$1 == name { print $3 ":" $4 }' "$DESTDIR/etc/passwd" 2>/dev/null || true
    else
        getent passwd "$1" | cut -d: -f3,4 || true
    fi
}

nginx_user() {
    awk '$1 == "user" { sub(";", "", $2); print $2; exit }' "$NGINX_DIR/nginx.conf" 2>/dev/null | grep . || echo www-data
}

# Put back what install_nginx_site changed: its argument is the backup directory.
restore_nginx() {
    local backup=$1
    if [ -f "$backup/listens" ]; then
        cp -p "$backup/listens" "$NGINX_DIR/sites-available/listens"
    else
        rm -f "$NGINX_DIR/sites-available/listens"
    fi
    rm -f "$NGINX_DIR/sites-enabled/listens"
    if [ -f "$backup/enabled" ]; then
        ln -sfn "$(cat "$backup/enabled")" "$NGINX_DIR/sites-enabled/listens"
    fi
    if [ -f "$backup/default" ]; then
        ln -sfn "$(cat "$backup/default")" "$NGINX_DIR/sites-enabled/default"
    fi
}

install_nginx_site() {
    local release=$1 site=${NGINX_SITE:-} name=${NGINX_SERVER_NAME:-} available enabled default
    local rendered backup output user owner first
    available="$NGINX_DIR/sites-available/listens"
    enabled="$NGINX_DIR/sites-enabled/listens"
    default="$NGINX_DIR/sites-enabled/default"
    if [ ! -f "$NGINX_DIR/nginx.conf" ] || ! command -v nginx >/dev/null 2>&1; then
        log "nginx is not installed (no $NGINX_DIR/nginx.conf or no nginx): the front door was not set up;"
        log "  apt-get install nginx, then run install.sh again (deploy/README.md, nginx)"
        return
    fi
    # Unless told otherwise, keep the variant that is installed: HTTPS stays HTTPS.
    if [ -z "$site" ]; then
        site=listens
        if grep -q '^ *ssl_certificate ' "$available" 2>/dev/null; then
            site=listens-tls
        fi
    fi
    case "$site" in
        listens | listens-tls) ;;
        *) die "NGINX_SITE must be listens or listens-tls (deploy/nginx/), not '$site'" ;;
    esac
    if [ -z "$name" ] && [ -f "$available" ]; then
        name=$(awk '$1 == "server_name" { sub(/;$/, ""); if ($2 != "_") { $1 = ""; sub(/^ /, ""); print; exit } }' "$available")
    fi
    if [ -z "$name" ]; then
        log "nginx site not installed: set NGINX_SERVER_NAME to the site's host name, e.g."
        log "  NGINX_SERVER_NAME=listens.example.org $0 (deploy/README.md, nginx)"
        return
    fi
    [[ "$name" =~ ^[A-Za-z0-9.-]+( [A-Za-z0-9.-]+)*$ ]] \
        || die "NGINX_SERVER_NAME '$name' must be host names (letters, digits, '.', '-') separated by spaces"
    first=${name%% *}
    # server_name gets every name; certificate paths take the first.
    rendered=$(sed -e "s|server_name $NGINX_PLACEHOLDER;|server_name $name;|" -e "s|$NGINX_PLACEHOLDER|$first|g" \
        "$release/deploy/nginx/$site.conf")

    # Owned by nginx's user: its workers write the cache; nobody else reads it.
    user=$(nginx_user)
    owner=$(nginx_owner "$user")
    if [ ! -d "$NGINX_CACHE" ]; then
        if [ $IS_ROOT -eq 1 ] && [ -n "$owner" ]; then
            run install -d -m 0700 -o "${owner%:*}" -g "${owner#*:}" "$NGINX_CACHE"
        else
            run install -d -m 0700 "$NGINX_CACHE"
            log "$NGINX_CACHE is not handed to nginx's user $user (not root, or no such user): chown it on the target"
        fi
    fi

    if [ -f "$available" ] && [ "$rendered" = "$(cat "$available")" ] && [ -L "$enabled" ] \
        && [ "$(readlink "$default" 2>/dev/null)" != /etc/nginx/sites-available/default ]; then
        log "nginx site $available is already installed and unchanged"
        return
    fi

    output=$(nginx_test) || die "nginx -t fails before any change, so the listens site was not installed; fix this first: $(nginx_reason "$output")"

    backup=$(mktemp -d)
    [ ! -f "$available" ] || cp -p "$available" "$backup/listens"
    [ ! -L "$enabled" ] || readlink "$enabled" >"$backup/enabled"
    [ ! -L "$default" ] || readlink "$default" >"$backup/default"

    mkdir -p "$NGINX_DIR/sites-available" "$NGINX_DIR/sites-enabled"
    log "+ install -m 0644 deploy/nginx/$site.conf $available (server_name $name)"
    printf '%s\n' "$rendered" >"$available.new"
    chmod 0644 "$available.new"
    mv -f "$available.new" "$available"
    # Relative, so the link also resolves inside a staging root.
    run ln -sfn ../sites-available/listens "$enabled"
    # Debian's placeholder site is the default server too: nginx -t refuses two.
    if [ "$(readlink "$default" 2>/dev/null)" = /etc/nginx/sites-available/default ]; then
        run rm -f "$default"
    fi

    if ! output=$(nginx_test); then
        restore_nginx "$backup"
        rm -rf "$backup"
        die "nginx -t failed with the new listens site, so the previous nginx configuration was put back and nginx was not reloaded: $(nginx_reason "$output")"
    fi
    rm -rf "$backup"
    log "nginx -t: the configuration with the listens site is valid"
    if [ -n "$DESTDIR" ]; then
        log "nginx site installed into $DESTDIR; reload nginx on the target"
    elif [ -d /run/systemd/system ] && systemctl is-active --quiet nginx; then
        run systemctl reload nginx || die "systemctl reload nginx failed (journalctl -u nginx says why); the site file is $available"
    else
        log "nginx is not running: systemctl enable --now nginx"
    fi
}

if [ $ROLLBACK -eq 1 ]; then
    [ -z "$VERSION" ] || die "--rollback goes back to $PREVIOUS; it takes no --version"
    back=$(readlink "$PREVIOUS" 2>/dev/null) || die "no previous release recorded ($PREVIOUS is missing)"
    [ -d "$TOP/$back" ] || die "the previous release $TOP/$back is gone"
    # Each release has its own venv, so going back runs no pip and needs no network.
    [ -x "$TOP/$back/venv/bin/listens-warm" ] \
        || die "$TOP/$back has no virtualenv with listens-warm (installed before releases had their own); install it again with --version"
    left=$(readlink "$APP")
    switch_to "$back"
    install_units "$TOP/$back"
    reload_units
    log ""
    log "Rolled back: $PREFIX/app -> $back (was $left, kept as $PREFIX/previous)."
    log "Next steps:"
    log "  systemctl reload listens-web    # workers restart on the old code; the timer's next run uses it too"
    log "  If the newer release changed the members database, restore its backup (deploy/README.md, Rollback)."
    exit 0
fi

if [ -z "$VERSION" ]; then
    VERSION=$(default_version)
fi
[[ "$VERSION" =~ ^[A-Za-z0-9][A-Za-z0-9._+-]*$ ]] \
    || die "version '$VERSION' must be letters, digits, '.', '_', '+' or '-', starting with a letter or digit"

before=$(readlink "$APP" 2>/dev/null || true)
log "installing listens $VERSION from $SOURCE into $TOP"
ensure_user
install_release
if [ $RELEASE_NEW -eq 1 ]; then
    install_venv "$RELEASES/$VERSION"
    compile_release "$RELEASES/$VERSION"
fi
switch_to "releases/$VERSION"
install_units "$RELEASES/$VERSION"
install_settings "$RELEASES/$VERSION"
reload_units
install_nginx_site "$RELEASES/$VERSION"

log ""
if [ -z "$before" ]; then
    log "Installed listens $VERSION: $PREFIX/app -> releases/$VERSION."
    log "Next steps (deploy/README.md walks through each):"
    log "  1. Put LASTFM_API_KEY (and LISTENS_MEMCACHED, if memcached runs elsewhere) in /etc/listens/listens.env"
    log "  2. memcached on this host, loopback only, UDP off:"
    log "       install -m 0644 $PREFIX/app/deploy/memcached.conf /etc/memcached.conf && systemctl restart memcached"
    log "  3. systemctl enable --now listens-web.service listens-warm.timer"
    log "  4. Add members as the listens user (deploy/README.md, Members), then run the first warm:"
    log "       systemctl start listens-warm.service && journalctl -u listens-warm -n 5"
    log "  5. Check: curl -s http://127.0.0.1:8000/healthz, and 'listens status' (deploy/README.md)"
elif [ "$before" = "releases/$VERSION" ]; then
    log "listens $VERSION was already the current release; nothing to reload."
else
    log "Upgraded listens: $PREFIX/app -> releases/$VERSION (was $before, kept as $PREFIX/previous)."
    log "Next steps:"
    log "  systemctl reload listens-web    # graceful: new workers on the new code; restart instead if"
    log "                                  # the units, /etc/listens/listens.env or gunicorn changed"
    log "  The timer's next warm run uses the new code by itself."
    log "  To go back: $PREFIX/app/deploy/install.sh --rollback"
fi
if [ $ENV_CREATED -eq 1 ]; then
    log "Created /etc/listens/listens.env from the example (root:$SERVICE_USER 0640): set LASTFM_API_KEY in it."
fi

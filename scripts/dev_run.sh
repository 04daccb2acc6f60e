#!/usr/bin/env bash
# `make run`: the whole site on this machine, for development and demos.
#
# Uses a memcached already answering on 127.0.0.1:11211 or starts one, seeds
# demo members, uses the fake Last.fm unless LASTFM_API_KEY is set, warms now
# and every 5 minutes, and serves the site on http://127.0.0.1:5000.
# Ctrl-C stops everything this script started.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
FLASK="$VENV/bin/flask"
mkdir -p instance
export LISTENS_DATABASE=${LISTENS_DATABASE:-$PWD/instance/listens.sqlite3}
export LISTENS_MEMCACHED=${LISTENS_MEMCACHED:-127.0.0.1:11211}
# The warm job's metrics textfile goes to instance/, never to the system's
# node_exporter directory (set LISTENS_METRICS_FILE= to write none).
export LISTENS_METRICS_FILE=${LISTENS_METRICS_FILE-$PWD/instance/listens_warm.prom}
WARM_INTERVAL_S=${WARM_INTERVAL_S:-300}
PORT=${PORT:-5000}
pids=()

cleanup() {
    for pid in "${pids[@]}"; do
        pkill -P "$pid" 2>/dev/null || true
        kill "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

answers() {  # answers HOST:PORT: does a memcached answer there?
    "$PY" - "$1" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
try:
    with socket.create_connection((host, int(port)), timeout=1) as connection:
        connection.sendall(b"version\r\n")
        sys.exit(0 if connection.recv(64).startswith(b"VERSION") else 1)
except OSError:
    sys.exit(1)
PY
}

first_server=${LISTENS_MEMCACHED%%,*}
if answers "$first_server"; then
    echo "using the memcached already running on $first_server"
else
    host=${first_server%:*}
    port=${first_server##*:}
    user_args=()
    [ "$(id -u)" -eq 0 ] && user_args=(-u nobody)
    memcached -l "$host" -p "$port" -U 0 -m 64 "${user_args[@]}" &
    pids+=($!)
    for _ in $(seq 50); do answers "$first_server" && break; sleep 0.1; done
    answers "$first_server" || { echo "error: memcached did not start on $first_server" >&2; exit 1; }
    echo "started memcached on $first_server (pid ${pids[-1]})"
fi

if [ -z "${LASTFM_API_KEY:-}" ]; then
    exec 3< <("$PY" -m devtools.fake_lastfm --host 127.0.0.1 --port "${FAKE_LASTFM_PORT:-8765}")
    pids+=($!)
    read -r ready <&3
    export LISTENS_LASTFM_URL=${ready##* }
    echo "LASTFM_API_KEY is not set: using the fake Last.fm at $LISTENS_LASTFM_URL"
fi

# Demo members: real-looking listeners plus the fake server's quirk users.
existing=$("$FLASK" --app app users list | cut -f1)
for name in alice bob carol dave erin frank grace heidi ivan judy ghost hidden quiet legacy starry; do
    grep -qx "$name" <<<"$existing" || "$FLASK" --app app users add "$name" --lastfm "$name" >/dev/null
done

(
    while true; do
        "$PY" scripts/warm_listens.py || echo "warm run exited $?; the page keeps the last good snapshot" >&2
        sleep "$WARM_INTERVAL_S"
    done
) &
pids+=($!)

echo "serving http://127.0.0.1:$PORT (Ctrl-C to stop)"
"$FLASK" --app app run --host 127.0.0.1 --port "$PORT"

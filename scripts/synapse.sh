#!/usr/bin/env bash
# A throwaway Synapse homeserver on 127.0.0.1 for meshrelay's integration
# tests and benchmarks (protocol-spec/homeserver.md, "Test homeserver").
#
#   scripts/synapse.sh init                   install if needed, write the config (no start),
#                                             print the base URL (its port is fixed from now on)
#   scripts/synapse.sh start                  install if needed, start, print the base URL
#   scripts/synapse.sh url                    print the base URL of the running server
#   scripts/synapse.sh register USER [PASSWORD] [--admin] [--json]
#                                             register USER, print its access token
#                                             (--json: the whole register response)
#   scripts/synapse.sh stop                   stop the server (by its PID)
#   scripts/synapse.sh status                 exit 0 if running
#   scripts/synapse.sh python                 print the venv's python (it has matrix-nio, for
#                                             scripts/matrix_client.py); valid after init/start
#
# Environment:
#   SYNAPSE_DIR        state directory (config, keys, SQLite DB, log, pid);
#                      default target/synapse. Tests use one per test run.
#   SYNAPSE_VENV       virtualenv; default target/synapse-venv (reused when present)
#   SYNAPSE_VERSION    matrix-synapse version to install; default 1.163.2
#                      (matrix-nio, pinned below, goes into the same venv)
#   SYNAPSE_APPSERVICE at `init`/`start`: an application-service registration YAML;
#                      homeserver.yaml gets app_service_config_files: [its absolute
#                      path] (added to an existing config too; a running server whose
#                      entry changed is restarted, since Synapse reads it at start-up)
#   SYNAPSE_WATCH_PID  if set at `start`, Synapse is stopped when that process exits
#                      (tests pass their own PID so nothing outlives the test run)
#   SYNAPSE_CLEANUP    with SYNAPSE_WATCH_PID: 1 = also delete SYNAPSE_DIR afterwards
#
# Every command is idempotent and serialised by a lock file, so parallel test
# processes may call `start` and `register` at the same time. The server is
# loopback-only, has no federation, a SQLite database, a
# registration_shared_secret and relaxed rc_* rate limits.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${SYNAPSE_DIR:-$ROOT/target/synapse}"
VENV="${SYNAPSE_VENV:-$ROOT/target/synapse-venv}"
VERSION="${SYNAPSE_VERSION:-1.163.2}"
# matrix-nio (without the [e2e] extra: no libolm/vodozemac needed) for the
# test client scripts/matrix_client.py.
NIO_VERSION="0.26.0"
PY="$VENV/bin/python"
SERVER_NAME="localhost"
START_TIMEOUT_S=120

log() { echo "synapse.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"

# Serialise everything that mutates state. The venv lock is separate because
# several state directories share one virtualenv.
# The lock's descriptor is closed in every child that outlives the command
# (Synapse itself, the watcher), or they would hold the lock forever.
LOCK_FDS=()
with_lock() {
    local lockfile="$1"; shift
    local fd
    exec {fd}>"$lockfile"
    flock "$fd"
    LOCK_FDS+=("$fd")
    local rc=0
    "$@" || rc=$?
    unset 'LOCK_FDS[-1]'
    exec {fd}>&-
    return $rc
}

close_lock() {
    local fd
    for fd in "${LOCK_FDS[@]}"; do eval "exec $fd>&-"; done
}

install_venv() {
    if [[ -x "$PY" ]] \
        && "$PY" -c 'import synapse, sys; sys.exit(0 if synapse.__version__.split(" ")[0] == sys.argv[1] else 1)' "$VERSION" 2>/dev/null \
        && "$PY" -c 'import nio, sys, importlib.metadata as m; sys.exit(0 if m.version("matrix-nio") == sys.argv[1] else 1)' "$NIO_VERSION" 2>/dev/null; then
        return 0
    fi
    # An existing venv is reused: pip only adds what is missing (e.g. nio).
    log "installing matrix-synapse==$VERSION matrix-nio==$NIO_VERSION into $VENV (first run only, ~60 s)"
    local t0=$SECONDS
    [[ -x "$PY" ]] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install --disable-pip-version-check -q \
        "matrix-synapse==$VERSION" "matrix-nio==$NIO_VERSION" >&2
    log "installed in $((SECONDS - t0)) s"
}

# install_venv under the lock shared by every state directory.
ensure_venv() {
    mkdir -p "$(dirname "$VENV")"
    with_lock "$(dirname "$VENV")/.synapse-venv.lock" install_venv
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

random_secret() {
    python3 -c 'import secrets; print(secrets.token_hex(32))'
}

write_config() {
    [[ -f "$DIR/homeserver.yaml" ]] && return 0
    local port; port="$(free_port)"
    mkdir -p "$DIR/media_store"
    cat >"$DIR/log.config" <<EOF
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: $DIR/homeserver.log
    encoding: utf8
loggers:
  synapse.storage.SQL:
    level: WARNING
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
EOF
    # Rate limits: generous enough that tests and the benchmark measure
    # meshrelay, not the limiter. Tests that need a 429 tighten one user's
    # limit with the admin override_ratelimit API.
    cat >"$DIR/homeserver.yaml" <<EOF
server_name: "$SERVER_NAME"
public_baseurl: "http://127.0.0.1:$port/"
pid_file: "$DIR/homeserver.pid"
listeners:
  - port: $port
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: "$DIR/homeserver.db"
log_config: "$DIR/log.config"
media_store_path: "$DIR/media_store"
signing_key_path: "$DIR/signing.key"
registration_shared_secret: "$(random_secret)"
macaroon_secret_key: "$(random_secret)"
form_secret: "$(random_secret)"
report_stats: false
enable_metrics: false
trusted_key_servers: []
suppress_key_server_warning: true
federation_domain_whitelist: []
allow_public_rooms_over_federation: false
enable_registration: false
default_room_version: "12"
presence:
  enabled: false
url_preview_enabled: false
rc_message: {per_second: 10000, burst_count: 10000}
rc_registration: {per_second: 10000, burst_count: 10000}
rc_login:
  address: {per_second: 10000, burst_count: 10000}
  account: {per_second: 10000, burst_count: 10000}
  failed_attempts: {per_second: 10000, burst_count: 10000}
rc_joins:
  local: {per_second: 10000, burst_count: 10000}
  remote: {per_second: 10000, burst_count: 10000}
rc_joins_per_room: {per_second: 10000, burst_count: 10000}
rc_invites:
  per_room: {per_second: 10000, burst_count: 10000}
  per_user: {per_second: 10000, burst_count: 10000}
  per_issuer: {per_second: 10000, burst_count: 10000}
rc_admin_redaction: {per_second: 10000, burst_count: 10000}
rc_room_creation: {per_second: 10000, burst_count: 10000}
rc_3pid_validation: {per_second: 10000, burst_count: 10000}
EOF
    "$PY" -m synapse.app.homeserver -c "$DIR/homeserver.yaml" --generate-keys >/dev/null 2>&1 \
        || die "key generation failed"
}

# With SYNAPSE_APPSERVICE set, make homeserver.yaml list that registration
# (replacing an earlier app_service_config_files line). Returns 0 when the
# file changed, 1 when it already had the line (or the variable is unset).
ensure_appservice() {
    [[ -n "${SYNAPSE_APPSERVICE:-}" ]] || return 1
    local f="$SYNAPSE_APPSERVICE" line
    [[ -d "$(dirname "$f")" ]] || die "SYNAPSE_APPSERVICE: no directory $(dirname "$f")"
    f="$(cd "$(dirname "$f")" && pwd)/$(basename "$f")"
    # A JSON list of one string is valid YAML and quotes any path safely.
    line="app_service_config_files: $(python3 -c 'import json, sys; print(json.dumps([sys.argv[1]]))' "$f")"
    grep -qxF "$line" "$DIR/homeserver.yaml" && return 1
    sed -i '/^app_service_config_files:/d' "$DIR/homeserver.yaml"
    echo "$line" >>"$DIR/homeserver.yaml"
    log "homeserver.yaml: $line"
    return 0
}

base_url() {
    local port
    port="$(sed -n 's/^  - port: \([0-9]*\)$/\1/p' "$DIR/homeserver.yaml")"
    echo "http://127.0.0.1:$port"
}

running_pid() {
    local pid
    [[ -f "$DIR/synapse.pid" ]] || return 1
    pid="$(cat "$DIR/synapse.pid")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

responds() {
    python3 - "$(base_url)/_matrix/client/versions" <<'EOF'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

do_init() {
    ensure_venv
    write_config
    ensure_appservice || true
    base_url
}

do_start() {
    ensure_venv
    local fresh=0
    [[ -f "$DIR/homeserver.yaml" ]] || fresh=1
    write_config
    if [[ -n "${SYNAPSE_APPSERVICE:-}" && ! -f "$SYNAPSE_APPSERVICE" ]]; then
        die "SYNAPSE_APPSERVICE: no file $SYNAPSE_APPSERVICE"
    fi
    local changed=0
    ensure_appservice && changed=1
    if running_pid >/dev/null && responds; then
        if ((changed)); then
            # Synapse reads registrations only at start-up.
            log "restarting to load $SYNAPSE_APPSERVICE"
            do_stop
        else
            base_url
            return 0
        fi
    fi
    local t0=$SECONDS attempt=1 pid
    while :; do
        rm -f "$DIR/homeserver.pid"
        # setsid: the server gets its own session, so a test harness's process
        # group signals do not reach it; stop it through `stop` (or the watcher).
        (
            close_lock
            exec setsid "$PY" -m synapse.app.homeserver -c "$DIR/homeserver.yaml" \
                >>"$DIR/stdout.log" 2>&1 </dev/null
        ) &
        pid=$!
        echo "$pid" >"$DIR/synapse.pid"
        while ! responds && kill -0 "$pid" 2>/dev/null; do
            ((SECONDS - t0 > START_TIMEOUT_S)) && break
            sleep 0.2
        done
        # The free port was taken between choosing it and binding it
        # (tests bind ephemeral ports concurrently). Until a URL was handed
        # out (a fresh config at `start`) another port is as good: at most
        # three tries.
        if ((fresh && attempt < 3)) && ! kill -0 "$pid" 2>/dev/null \
            && grep -q "Address already in use" "$DIR/stdout.log" 2>/dev/null; then
            local old new
            old="$(sed -n 's/^  - port: \([0-9]*\)$/\1/p' "$DIR/homeserver.yaml")"
            new="$(free_port)"
            sed -i "s/^  - port: $old\$/  - port: $new/; s|127.0.0.1:$old/|127.0.0.1:$new/|" "$DIR/homeserver.yaml"
            : >"$DIR/stdout.log"
            log "port $old was taken at start-up; trying $new"
            attempt=$((attempt + 1))
            continue
        fi
        break
    done
    while ! responds; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$DIR/stdout.log" "$DIR/homeserver.log" >&2 2>/dev/null || true
            die "Synapse exited during start-up (logs in $DIR)"
        fi
        if ((SECONDS - t0 > START_TIMEOUT_S)); then
            kill "$pid" 2>/dev/null || true
            die "Synapse did not answer within ${START_TIMEOUT_S} s (logs in $DIR)"
        fi
        sleep 0.2
    done
    log "started pid $pid in $((SECONDS - t0)) s at $(base_url)"
    if [[ -n "${SYNAPSE_WATCH_PID:-}" ]]; then
        # Stop the server when the watched process (a test run) exits.
        (
            close_lock
            exec </dev/null >/dev/null 2>&1
            while kill -0 "$SYNAPSE_WATCH_PID" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do
                sleep 1
            done
            # Only when the watched process is gone: after a plain `stop`
            # the state must survive for a later `start`.
            if ! kill -0 "$SYNAPSE_WATCH_PID" 2>/dev/null; then
                stop_pid "$pid"
                if [[ "${SYNAPSE_CLEANUP:-0}" == 1 ]]; then rm -rf "$DIR"; fi
            fi
        ) &
        disown
    fi
    base_url
}

stop_pid() {
    local pid="$1"
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

do_stop() {
    local pid
    if pid="$(running_pid)"; then
        stop_pid "$pid"
        log "stopped pid $pid"
    fi
    rm -f "$DIR/synapse.pid"
}

do_register() {
    local user="${1:?usage: register USER [PASSWORD] [--admin] [--json]}"; shift
    local password="" admin=0 json=0
    for a in "$@"; do
        case "$a" in
            --admin) admin=1 ;;
            --json) json=1 ;;
            *) password="$a" ;;
        esac
    done
    [[ -n "$password" ]] || password="pw-$user"
    running_pid >/dev/null && responds || die "Synapse is not running (scripts/synapse.sh start)"
    local secret
    secret="$(sed -n 's/^registration_shared_secret: "\(.*\)"$/\1/p' "$DIR/homeserver.yaml")"
    # The admin shared-secret registration API: fetch a nonce, then POST the
    # user with HMAC-SHA1(secret, nonce\0user\0password\0admin|notadmin).
    "$PY" - "$(base_url)" "$secret" "$user" "$password" "$admin" "$json" <<'EOF'
import hashlib, hmac, json, sys, urllib.error, urllib.request
base, secret, user, password, admin, as_json = sys.argv[1:7]
url = base + "/_synapse/admin/v1/register"
with urllib.request.urlopen(url, timeout=30) as r:
    nonce = json.load(r)["nonce"]
mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
mac.update(b"\0".join([nonce.encode(), user.encode(), password.encode(),
                       b"admin" if admin == "1" else b"notadmin"]))
body = {"nonce": nonce, "username": user, "password": password,
        "admin": admin == "1", "mac": mac.hexdigest()}
req = urllib.request.Request(url, data=json.dumps(body).encode(),
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        resp = json.load(r)
except urllib.error.HTTPError as e:
    sys.stderr.write("synapse.sh: register %s failed: %s %s\n" % (user, e.code, e.read().decode()))
    sys.exit(1)
print(json.dumps(resp) if as_json == "1" else resp["access_token"])
EOF
}

cmd="${1:-}"; shift || true
case "$cmd" in
    init) with_lock "$DIR/.lock" do_init ;;
    start) t0=$SECONDS; with_lock "$DIR/.lock" do_start; log "start took $((SECONDS - t0)) s" ;;
    stop) with_lock "$DIR/.lock" do_stop ;;
    url) running_pid >/dev/null || die "Synapse is not running"; base_url ;;
    status) running_pid >/dev/null && responds ;;
    register) do_register "$@" ;;
    python) echo "$PY" ;;
    *) sed -n '2,/^#   SYNAPSE_CLEANUP/p' "$0" >&2; exit 2 ;;
esac

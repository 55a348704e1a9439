#!/usr/bin/env bash
# Memory of a field relay (reports/field.md, issue 19): the resident set of
# `meshrelay run` idle, and holding EVENTS events with LINKS active links at
# the default link budget (goal: <= 32 MiB).
#
# Usage: scripts/field-rss.sh [BIN] [EVENTS] [LINKS] [SECONDS]
#   BIN      the binary to measure (default target/release/meshrelay; build
#            it with `cargo build --release --bin meshrelay`)
#   EVENTS   events in the relay's store (default 100000)
#   LINKS    peer daemons linked to it (default 6)
#   SECONDS  how long the peers send (default 60)
#
# The store is filled by `examples/store_rss.rs --fill` (1 KiB events in
# 100 rooms, as in reports/store.md), built in the dev profile unless
# FILL=PATH names a built store_rss binary, or STORE=PATH names a store
# file filled before (copied, so it is reused unchanged). Each peer is a daemon of the
# same binary linked to the relay by `--peer`; it creates a room, invites
# the relay, and sends messages as fast as its CLI allows, so every link
# carries traffic the relay stores, decrypts and acknowledges, while the
# anti-entropy rounds walk its 100 carried rooms. The relay's VmRSS is
# sampled every second; VmHWM is the peak over the whole run (the open of
# the filled store included). Everything runs on 127.0.0.1 without mDNS
# and BLE; nothing is left behind.
#
# Under emulation: QEMU="qemu-aarch64 -L /usr/aarch64-linux-gnu" runs the
# relay (BIN, a binary for that target) under qemu-user, and PEER_BIN=PATH
# names a native binary for the peers and every CLI call. The relay's
# address space is then reserved at a fixed host address (`-B`, `-R`), and
# its resident set is the resident pages of that range only (the guest's
# binary, libraries, heap and stacks), not qemu's own translation cache,
# heap and libraries, which are reported beside it. There is no VmHWM for
# the guest: the peak is the largest sample.
set -euo pipefail

BIN=$(realpath "${1:-target/release/meshrelay}")
N=${2:-100000}
LINKS=${3:-6}
SECS=${4:-60}
CLI=$(realpath "${PEER_BIN:-$BIN}")
GUEST_BASE=$((0x100000000000))
GUEST_SIZE=$((0x400000000))
relay_cmd=("$BIN")
if [[ -n ${QEMU:-} ]]; then
    read -ra q <<<"$QEMU"
    # A 32-bit guest's space is at most 4 GiB.
    case "${q[0]}" in *aarch64*|*x86_64*|*riscv64*) ;; *) GUEST_SIZE=$((0xfffff000)) ;; esac
    relay_cmd=("${q[@]}" -B "$(printf 0x%x "$GUEST_BASE")" -R "$(printf 0x%x "$GUEST_SIZE")" "$BIN")
fi
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

mr() {
    local d=$1
    shift
    "$CLI" --data-dir "$work/$d" "$@"
}
status_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
# Resident KiB of the mappings of process $1 in [$2, $3) (addresses below
# 2^53, exact in awk's doubles; mawk has no strtonum).
range_kib() {
    awk -v lo="$2" -v hi="$3" '
        function hex(h,   i, v) { v = 0; for (i = 1; i <= length(h); i++) v = v * 16 + index("0123456789abcdef", substr(h, i, 1)) - 1; return v }
        /^[0-9a-f]+-[0-9a-f]+ / { split($1, r, "-"); s = hex(r[1]); inr = (s >= lo && s < hi) }
        /^Rss:/ { if (inr) sum += $2 }
        END { print sum + 0 }' "/proc/$1/smaps"
}
# The relay's resident KiB: VmRSS natively, the guest's range under qemu.
kib() {
    if [[ -n ${QEMU:-} && $2 == VmRSS ]]; then
        range_kib "$1" "$GUEST_BASE" $((GUEST_BASE + GUEST_SIZE))
    elif [[ -n ${QEMU:-} && $2 == VmHWM ]]; then
        echo "n/a (qemu VmRSS $(status_kib "$1" VmRSS), VmHWM $(status_kib "$1" VmHWM))"
    else
        status_kib "$1" "$2"
    fi
}
start() {
    local d=$1 cmd=("$CLI")
    shift
    if [[ $d == idle || $d == hub ]]; then cmd=("${relay_cmd[@]}"); fi
    "${cmd[@]}" --data-dir "$work/$d" run --no-mdns --no-ble --listen /ip4/127.0.0.1/tcp/0 "$@" \
        2>"$work/$d.log" &
    pids+=($!)
    last=$!
    for _ in $(seq 600); do
        mr "$d" status --json >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "daemon $d did not start" >&2
    cat "$work/$d.log" >&2
    exit 1
}
field() { sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p" <<<"$1"; }

echo "binary: $BIN ($(stat -c %s "$BIN") bytes)${QEMU:+, under $QEMU; peers and CLI: $CLI}"

# 1. Idle: a fresh data directory, no links.
mr idle init --name idle >/dev/null
start idle
idle=$last
sleep 5
echo "idle: VmRSS $(kib "$idle" VmRSS) KiB, VmHWM $(kib "$idle" VmHWM) KiB"
kill "$idle"
wait "$idle" 2>/dev/null || true

# 2. The relay holding N events.
mr hub init --name hub >/dev/null
t0=$(date +%s)
if [[ -n ${STORE:-} ]]; then
    cp "$STORE" "$work/hub/store.redb"
elif [[ -n ${FILL:-} ]]; then
    "$FILL" --fill "$work/hub/store.redb" "$N"
else
    cargo run -q --example store_rss -- --fill "$work/hub/store.redb" "$N"
fi
echo "fill: $(($(date +%s) - t0)) s, store file $(($(stat -c %s "$work/hub/store.redb") >> 20)) MiB"
start hub
hub=$last
sleep 3
echo "loaded, no links: VmRSS $(kib "$hub" VmRSS) KiB, VmHWM $(kib "$hub" VmHWM) KiB"
hub_addr=$(mr hub status --json | grep -o '/ip4/127.0.0.1/tcp/[0-9]*' | head -1)
hub_card=$(mr hub id --json | sed -n 's/.*"card": *"\([^"]*\)".*/\1/p')

# 3. LINKS peers, each with a room the relay is invited to.
for i in $(seq "$LINKS"); do
    mr "p$i" init --name "peer$i" >/dev/null
    start "p$i" --peer "$hub_addr"
done
for _ in $(seq 600); do
    [[ $(field "$(mr hub status --json)" peers) == "$LINKS" ]] && break
    sleep 0.1
done
echo "links up: $(field "$(mr hub status --json)" peers)"
for i in $(seq "$LINKS"); do
    room=$(mr "p$i" room create --json "room$i" | sed -n 's/.*"room_id":"\([0-9a-f]*\)".*/\1/p')
    mr "p$i" room invite "$room" "$hub_card" >/dev/null
    echo "$room" >"$work/p$i.room"
done

# 4. Traffic for SECS seconds; sample the relay every second.
end=$(($(date +%s) + SECS))
for i in $(seq "$LINKS"); do
    (
        room=$(cat "$work/p$i.room")
        n=0
        while (($(date +%s) < end)); do
            n=$((n + 1))
            mr "p$i" send "$room" "peer $i message $n: $(head -c 120 /dev/zero | tr '\0' x)" >/dev/null
        done
        echo "$n" >"$work/p$i.sent"
    ) &
    pids+=($!)
done
max=0
samples=()
while (($(date +%s) < end)); do
    r=$(kib "$hub" VmRSS)
    samples+=("$r")
    ((r > max)) && max=$r
    sleep 1
done
sleep 2
sent=0
for i in $(seq "$LINKS"); do sent=$((sent + $(cat "$work/p$i.sent" 2>/dev/null || echo 0))); done
st=$(mr hub status --json)
echo "traffic: $sent messages sent by $LINKS peers in $SECS s; relay stored $(field "$st" events_stored) new events, holds $(field "$st" events) events"
last=$(kib "$hub" VmRSS)
((last > max)) && max=$last
echo "loaded, $LINKS active links: VmRSS max $max KiB, last $last KiB, VmHWM $(kib "$hub" VmHWM) KiB"
echo "samples (KiB): ${samples[*]}"
mr hub peers --json | tr '}' '\n' | sed -n 's/.*"bytes_in":\([0-9]*\),"bytes_out":\([0-9]*\).*/link bytes in \1, out \2/p'

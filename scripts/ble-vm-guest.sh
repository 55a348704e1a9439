#!/bin/sh
# The part of scripts/ble-vm.sh that runs inside the QEMU guest, after
# bluetoothd manages two emulated controllers. Two real `meshrelay run`
# daemons, one per controller, no mDNS and no LAN peers, must find each
# other over BLE and sync a room, through their control sockets and the
# normal CLI:
#
#   1. A and B get identities and exchange contact cards (no daemon yet);
#      A creates a room, invites B and sends a first message (stored only).
#   2. Both daemons start (`--ble-adapter`, `--no-mdns`); B's `messages`
#      must show A's message. Measured: first advertisement seen ("BLE
#      connecting" in either log) -> B shows the message.
#   3. A sends live, B sees it; B replies, A sees it.
#   4. `status --json` of both (the `ble` field: privacy as read from the
#      controller, links with the peer's address type), `meshrelay stop`,
#      and no panic in either log.
#   5. LE privacy switched on in controller A (btmgmt), daemon A started
#      again: its `status` must say what the controller says ("rpa" once the
#      setting is on) and whether advertising then works.
#
# Environment: BIN (the meshrelay binary), ADAPTER_A, ADAPTER_B (hciN),
# STEP_TIMEOUT (seconds per wait, default 240). Prints BLE_VM_RESULT=PASS or
# BLE_VM_RESULT=FAIL:<step>; exit code 0 on PASS.
set -u
: "${BIN:?}" "${ADAPTER_A:?}" "${ADAPTER_B:?}"
STEP_TIMEOUT=${STEP_TIMEOUT:-240}
W=/tmp/meshrelay-ble-vm # a tmpfs in the guest (the host root is read-only)
rm -rf "$W" && mkdir -p "$W"
A="$W/a"
B="$W/b"
export RUST_LOG="${RUST_LOG:-meshrelay::transport::ble=debug,meshrelay=info}"

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
fail() {
  echo "BLE_VM_RESULT=FAIL:$1"
  for n in a b; do
    echo "--- daemon $n log (tail) ---"
    grep -a -v "LAN\|libp2p" "$W/$n.log" 2>/dev/null | tail -80
  done
  exit 1
}
mr() { dir=$1; shift; "$BIN" --data-dir "$dir" "$@"; }
# wait_text DIR ROOM TEXT: until `messages ROOM` on DIR shows TEXT.
wait_text() {
  end=$(($(date +%s) + STEP_TIMEOUT))
  while [ "$(date +%s)" -le "$end" ]; do
    mr "$1" messages "$2" 2>/dev/null | grep -qF "$3" && return 0
    sleep 0.2
  done
  return 1
}
card() { mr "$1" id --json | sed -n 's/.*"card": *"\([^"]*\)".*/\1/p'; }
# log_time FILE PATTERN: the Unix time of the first log line matching.
log_time() {
  ts=$(grep -a -m1 "$2" "$1" | sed 's/\x1b\[[0-9;]*m//g' | awk '{print $1}')
  [ -n "$ts" ] && date -d "$ts" +%s.%N
}

echo "=== 1. identities, cards, room (no daemon yet) ==="
mr "$A" init --name Ana >/dev/null || fail init-a
mr "$B" init --name Bo >/dev/null || fail init-b
mr "$A" contact add "$(card "$B")" || fail contact-a
mr "$B" contact add "$(card "$A")" || fail contact-b
ROOM=$(mr "$A" room create --json "ble field test" | sed -n 's/.*"room_id":"\([0-9a-f]*\)".*/\1/p')
[ -n "$ROOM" ] || fail room-create
echo "room $ROOM"
mr "$A" room invite "$ROOM" "$(card "$B")" >/dev/null || fail invite
FIRST="first message over BLE"
mr "$A" send "$ROOM" "$FIRST" >/dev/null || fail send-first

echo "=== 2. two daemons, BLE only ($ADAPTER_A, $ADAPTER_B) ==="
T_START=$(now)
"$BIN" --data-dir "$A" run --no-mdns --ble-adapter "$ADAPTER_A" >"$W/a.log" 2>&1 &
PID_A=$!
"$BIN" --data-dir "$B" run --no-mdns --ble-adapter "$ADAPTER_B" >"$W/b.log" 2>&1 &
PID_B=$!
# Poll only once both daemons hold their stores and answer on their control
# sockets (a CLI command without a daemon opens the store itself, and a
# daemon starting at that moment would find the store in use).
wait_daemon() {
  end=$(($(date +%s) + STEP_TIMEOUT))
  while [ "$(date +%s)" -le "$end" ]; do
    [ -S "$1/control.sock" ] && return 0
    sleep 0.2
  done
  return 1
}
wait_daemon "$A" || fail daemon-a-start
wait_daemon "$B" || fail daemon-b-start
wait_text "$B" "$ROOM" "$FIRST" || fail first-message
T_FIRST=$(now)
T_DISC=$( (log_time "$W/a.log" "BLE connecting"; log_time "$W/b.log" "BLE connecting") | sort -n | head -1)
T_LINK=$( (log_time "$W/a.log" "BLE link up"; log_time "$W/b.log" "BLE link up") | sort -n | head -1)
echo "B shows A's message: $(secs "$T_START" "$T_FIRST") s after the daemons started"
if [ -n "$T_DISC" ]; then
  echo "MEASURED discovery -> first synced event: $(secs "$T_DISC" "$T_FIRST") s" \
    "(discovery -> link up $(secs "$T_DISC" "${T_LINK:-$T_DISC}") s; start -> discovery $(secs "$T_START" "$T_DISC") s)"
fi
echo "--- B: messages $ROOM ---"
mr "$B" messages "$ROOM"

echo "=== 3. live: A sends, B replies ==="
SECOND="second message, sent while linked"
T0=$(now)
mr "$A" send "$ROOM" "$SECOND" >/dev/null || fail send-second
wait_text "$B" "$ROOM" "$SECOND" || fail second-message
echo "MEASURED A send -> B shows it: $(secs "$T0" "$(now)") s"
REPLY="reply from B over BLE"
T0=$(now)
mr "$B" send "$ROOM" "$REPLY" >/dev/null || fail send-reply
wait_text "$A" "$ROOM" "$REPLY" || fail reply
echo "MEASURED B send -> A shows it: $(secs "$T0" "$(now)") s"
echo "--- A: messages $ROOM ---"
mr "$A" messages "$ROOM"

echo "=== 4. status, peers, stop ==="
for n in A B; do
  d=$A
  [ "$n" = B ] && d=$B
  echo "--- $n: status --json ---"
  mr "$d" status --json
  echo "--- $n: status ---"
  mr "$d" status | grep -E '^(ble|peers)'
  echo "--- $n: peers --json ---"
  mr "$d" peers --json
done
# Only BLE links: no mDNS, no --peer.
for d in "$A" "$B"; do
  kinds=$(mr "$d" peers --json | jq -r '.[].kind' | sort -u | tr '\n' ' ')
  [ "$kinds" = "ble " ] || fail "link kinds: $kinds"
done
mr "$A" stop || fail stop-a
mr "$B" stop || fail stop-b
wait "$PID_A" || fail "daemon A exit $?"
wait "$PID_B" || fail "daemon B exit $?"
if grep -a -n "panicked" "$W/a.log" "$W/b.log"; then fail panic; fi
grep -a -h "signal-stream cleanup" "$W/a.log" "$W/b.log" | sed 's/\x1b\[[0-9;]*m//g'
for n in a b; do
  echo "--- daemon $n log (BLE lines) ---"
  grep -a -E "BLE|ble" "$W/$n.log" | sed 's/\x1b\[[0-9;]*m//g' | head -80
done
echo "=== 5. LE privacy on in $ADAPTER_A, read back by the node ==="
btmgmt --index "$ADAPTER_A" power off >/dev/null
btmgmt --index "$ADAPTER_A" privacy on
btmgmt --index "$ADAPTER_A" power on >/dev/null
btmgmt --index "$ADAPTER_A" info | grep -E 'addr|settings'
"$BIN" --data-dir "$A" run --no-mdns --ble-adapter "$ADAPTER_A" >"$W/a2.log" 2>&1 &
PID_A=$!
wait_daemon "$A" || fail daemon-a2-start
end=$(($(date +%s) + STEP_TIMEOUT))
while [ "$(date +%s)" -le "$end" ]; do
  mr "$A" status --json 2>/dev/null | jq -e '.ble.state == "running"' >/dev/null && break
  sleep 1
done
sleep 5
echo "--- A (privacy on): status --json ---"
STATUS=$(mr "$A" status --json)
echo "$STATUS"
BLE=$(echo "$STATUS" | jq -c .ble)
mr "$A" stop || fail stop-a2
wait "$PID_A" || fail "daemon A (privacy) exit $?"
grep -a -E "BLE|advertis" "$W/a2.log" | sed 's/\x1b\[[0-9;]*m//g' | head -10
if grep -a -n "panicked" "$W/a2.log"; then fail panic; fi
# The node must report the controller's setting, not guess.
echo "$BLE" | jq -e '.privacy == "rpa"' >/dev/null || fail "privacy not read back as rpa"
echo "BLE_VM_RESULT=PASS"

#!/usr/bin/env bash
# Issue 23, cost per operation against history: two daemons on loopback;
# A sends room messages through the CLI as fast as it can for DUR seconds
# (default 180) while B receives; prints sends/s per 30 s window and both
# daemons' RSS. With PERF=1, records A for 20 s from second 70
# (/tmp/perf4.data). With WRAP="heaptrack -o /tmp/ht", A runs under that
# command (its heap profile). Usage: scripts/history-cost.sh BIN [DUR]
set -eu
BIN=$1; DUR=${2:-180}
# A daemon left over from an earlier run (say, a heaptrack child) would take
# B's connections on the reused port and the figures would be someone else's.
if ss -ltn | grep -qE '127\.0\.0\.1:4731[12] '; then
  echo "port 47311 or 47312 is in use: stop the daemon listening there first" >&2; exit 1
fi
T=$(mktemp -d); A=$T/a; B=$T/b
m() { "$BIN" --data-dir "$1" "${@:2}"; }
m $A init --name Ana >/dev/null; m $B init --name Bo >/dev/null
CARD_B=$(m $B id --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["card"])')
ROOM=$(m $A room create --json ops | python3 -c 'import json,sys; print(json.load(sys.stdin)["room_id"])')
m $A room invite "$ROOM" "$CARD_B" >/dev/null
${WRAP:-} "$BIN" --data-dir $A run --no-mdns --no-ble --listen /ip4/127.0.0.1/tcp/47311 >$T/a.log 2>&1 & PA=$!
sleep 1
"$BIN" --data-dir $B run --no-mdns --no-ble --listen /ip4/127.0.0.1/tcp/47312 --peer /ip4/127.0.0.1/tcp/47311 >$T/b.log 2>&1 & PB=$!
sleep 2
[ -n "${PERF:-}" ] && ( sleep 70; perf record -F 299 --call-graph dwarf,8192 -o /tmp/perf4.data -p "$PA" -- sleep 20 >/dev/null 2>&1 ) &
start=$(date +%s); win=$start; n=0; last=0
while :; do
  now=$(date +%s)
  [ $((now-start)) -ge $DUR ] && break
  m $A send "$ROOM" "message $n $(head -c 300 /dev/zero | tr '\0' x)" >/dev/null
  n=$((n+1))
  if [ $((now-win)) -ge 30 ]; then
    ra=$(awk '/VmRSS/{print $2}' /proc/$PA/status); rb=$(awk '/VmRSS/{print $2}' /proc/$PB/status)
    echo "t=$((now-start))s sent=$n rate=$(( (n-last)/(now-win) ))/s rssA=${ra}kB rssB=${rb}kB"
    win=$now; last=$n
  fi
done
sleep 3
echo "B holds $(m $B status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["store"]["events"])') events; A sent $n"
# Under WRAP, $PA is the wrapper: stop the whole process group's daemons.
pkill -f -- "--data-dir $A run" || true; kill $PA $PB 2>/dev/null || true; wait 2>/dev/null; rm -rf $T

#!/usr/bin/env bash
# Writes the upgrade fixture: a data directory made by the current release,
# which every later release must open and read without loss (issue 19,
# `protocol-spec/store.md` "Upgrades"). The test `tests/it/upgrade.rs`
# copies it to a temporary directory, reads every message and compares them
# with the committed expected output, sends a new message, and checks that
# a copy marked as written by a newer version is refused untouched.
#
# Usage: scripts/make-upgrade-fixture.sh [MESHRELAY_BINARY] [OUT_DIR]
#   MESHRELAY_BINARY  default target/debug/meshrelay (build it first:
#                     `cargo build --bin meshrelay`)
#   OUT_DIR           default tests/fixtures/upgrade-v1 (replaced)
#
# Everything runs offline (no daemon, no network): four devices pass
# bundles by "sneakernet" (`export` / `import`). The fixture is Ana's data
# directory: her identity and card, a contact book with Bo, Cy and Di, and
# the room "camp" with messages of four members and membership changes
# (create, invites, a promotion, a removal, a leave). `expected-messages.jsonl`
# is `messages ROOM --json` and `expected-rooms.json` is `rooms --json` (the
# members after those changes) at the time the fixture was made; `room.txt`
# holds the room ID. Regenerate only for a new fixture generation (a new release
# writing a new format): keep the old directories, they are the point.
set -euo pipefail

BIN=${1:-target/debug/meshrelay}
OUT=${2:-tests/fixtures/upgrade-v1}
BIN=$(realpath "$BIN")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mr() {
    local d=$1
    shift
    "$BIN" --data-dir "$work/$d" "$@"
}
card() { mr "$1" id --json | sed -n 's/.*"card": *"\([^"]*\)".*/\1/p'; }
devid() { mr "$1" id --json | sed -n 's/.*"device_id": *"\([^"]*\)".*/\1/p'; }
# Copies every event of the room from one device to the others.
sync() {
    local from=$1
    shift
    mr "$from" export --room "$room" "$work/bundle"
    for to in "$@"; do mr "$to" import "$work/bundle" >/dev/null; done
}

mr ana init --name Ana >/dev/null
mr bo init --name Bo >/dev/null
mr cy init --name Cy >/dev/null
mr di init --name Di >/dev/null
for who in bo cy di; do mr ana contact add "$(card "$who")" >/dev/null; done
mr bo contact add "$(card ana)" >/dev/null

room=$(mr ana room create --json camp | sed -n 's/.*"room_id":"\([0-9a-f]*\)".*/\1/p')
mr ana room invite "$room" "$(devid bo)" >/dev/null
mr ana room invite "$room" "$(devid cy)" >/dev/null
sync ana bo cy
for i in $(seq 1 14); do mr ana send "$room" "ana $i: water at the north tank" >/dev/null; done
sync ana bo cy
for i in $(seq 1 10); do mr bo send "$room" "bo $i: ça va, 👍 route clear" >/dev/null; done
sync bo ana cy
for i in $(seq 1 8); do mr cy send "$room" "cy $i: generator fuel low" >/dev/null; done
sync cy ana bo
mr ana room promote "$room" "$(devid bo)" >/dev/null
sync ana bo cy
mr bo room invite "$room" "$(card di)" >/dev/null
sync bo ana cy di
for i in $(seq 1 8); do mr di send "$room" "di $i: arrived at camp" >/dev/null; done
sync di ana bo cy
mr ana room remove "$room" "$(devid cy)" >/dev/null
sync ana bo di
for i in $(seq 1 6); do mr bo send "$room" "bo after removal $i" >/dev/null; done
sync bo ana di
mr di room leave "$room" >/dev/null
sync di ana bo
for i in $(seq 1 6); do mr ana send "$room" "ana after leave $i" >/dev/null; done
sync ana bo

rm -rf "$OUT"
mkdir -p "$OUT"
mr ana messages "$room" --json >"$OUT/expected-messages.jsonl"
mr ana rooms --json >"$OUT/expected-rooms.json"
printf '%s\n' "$room" >"$OUT/room.txt"
# The data directory itself (no control socket, no logs).
mkdir -p "$OUT/data"
find "$work/ana" -maxdepth 1 -type f -exec cp {} "$OUT/data/" \;
echo "fixture in $OUT: $(wc -l <"$OUT/expected-messages.jsonl") message lines, $(du -sh "$OUT" | cut -f1)"

#!/usr/bin/env bash
# Cross-builds meshrelay for Raspberry Pi targets and runs it under
# qemu-user: `meshrelay demo` and the daemon tests' chain scenario (three
# daemons A–B–C on 127.0.0.1, A and C never linked: A's message reaches C
# through B; C stops, A sends more, C restarts and catches up). Reports the
# stripped binary size and the start-up time to ready (the daemon's
# "daemon running" log line, sent with READY=1) under emulation. Installs
# what is missing: the rustup targets, Debian's cross compilers and C
# libraries, and qemu-user.
#
#   scripts/cross.sh [--debug | --release] [--package] [TRIPLE]...
#
# TRIPLE     aarch64-unknown-linux-gnu and/or armv7-unknown-linux-gnueabihf
#            (default: both)
# --debug    a debug build (faster to build, slow to run under qemu)
# --release  the `release` profile instead of `field` (the default: what
#            packages ship, with whole-program LTO; slower to build)
# --package  also build the .deb of each (scripts/package.sh --strip)
#
# A release build of the whole dependency tree takes long on a small
# machine: do not run it while others compile on the same cores.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=field
package=0
targets=()
for a in "$@"; do
    case "$a" in
        --debug) profile=debug ;;
        --release) profile=release ;;
        --package) package=1 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        -*) echo "cross.sh: unknown option $a" >&2; exit 2 ;;
        *) targets+=("$a") ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_updated=0
apt_install() {
    if [ $apt_updated -eq 0 ]; then
        $sudo apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The binary under emulation: `run_bin DIR ARGS...` (DIR "" for none).
run_bin() {
    local d=$1
    shift
    if [ -n "$d" ]; then
        "$qemu" -L "$sysroot" "$bin" --data-dir "$work/$d" "$@"
    else
        "$qemu" -L "$sysroot" "$bin" "$@"
    fi
}
ms() { date +%s%3N; }
starts=0

# Starts daemon DIR under qemu (extra run flags after it), waits for its
# "daemon running" line and prints the start-up time to ready.
start() {
    local d=$1
    shift
    local t0 log
    starts=$((starts + 1))
    log="$work/$d.$starts.log"
    t0=$(ms)
    RUST_LOG=info,libp2p=warn "$qemu" -L "$sysroot" "$bin" --data-dir "$work/$d" run \
        --no-mdns --no-ble --listen /ip4/127.0.0.1/tcp/0 "$@" 2>"$log" &
    pids+=($!)
    for _ in $(seq 1200); do
        if grep -q "daemon running" "$log" 2>/dev/null; then
            echo "cross.sh: $d ready after $(($(ms) - t0)) ms under $qemu" >&2
            return 0
        fi
        sleep 0.05
    done
    echo "cross.sh: daemon $d did not start" >&2
    cat "$log" >&2
    return 1
}
json_field() { sed -n "s/.*\"$2\": *\"\{0,1\}\([^\",}]*\).*/\1/p" <<<"$1" | head -n 1; }
texts() { run_bin "$1" messages "$2" --json | grep -c '"text"' || true; }
wait_for() {
    local what=$1
    shift
    for _ in $(seq 600); do
        if "$@"; then return 0; fi
        sleep 0.2
    done
    echo "cross.sh: timed out waiting for $what" >&2
    for f in "$work"/*.log; do echo "== $f" >&2; tail -n 20 "$f" >&2; done
    return 1
}

# The chain scenario of tests/it/daemon.rs
# (`chain_relays_a_to_c_through_b_and_c_catches_up_after_being_offline`).
chain() {
    rm -rf "${work:?}"/*
    for n in a b c; do run_bin "$n" init --name "$n" >/dev/null; done
    start b
    local b_addr
    b_addr=$(run_bin b status --json | grep -o '/ip4/127.0.0.1/tcp/[0-9]*' | head -n 1)
    start a --peer "$b_addr"
    start c --peer "$b_addr"
    c_pid=${pids[-1]}
    wait_for "links A–B and B–C" peers_are b 2
    local room
    room=$(json_field "$(run_bin a room create camp --json)" room_id)
    for n in b c; do
        run_bin a room invite "$room" "$(json_field "$(run_bin "$n" id --json)" card)" >/dev/null
    done
    run_bin a send "$room" "hello from A" >/dev/null
    wait_for "C reads A's message through B" test_count c "$room" 1
    run_bin c stop >/dev/null
    wait "$c_pid" || true
    for i in 1 2 3; do run_bin a send "$room" "while C was away $i" >/dev/null; done
    wait_for "B holds A's messages" test_count b "$room" 4
    start c --peer "$b_addr"
    wait_for "C catches up" test_count c "$room" 4
    echo "cross.sh: chain scenario passed under $qemu (A's messages reached C through B, and C caught up after being offline)" >&2
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pids=()
}
test_count() { [ "$(texts "$1" "$2")" = "$3" ]; }
peers_are() { [ "$(run_bin "$1" status --json | grep -o '"peers":[0-9]*')" = "\"peers\":$2" ]; }

for t in "${targets[@]}"; do
    case "$t" in
        aarch64-unknown-linux-gnu) cross=aarch64-linux-gnu; debarch=arm64; qemu=qemu-aarch64 ;;
        armv7-unknown-linux-gnueabihf) cross=arm-linux-gnueabihf; debarch=armhf; qemu=qemu-arm ;;
        *) echo "cross.sh: unsupported target $t" >&2; exit 2 ;;
    esac
    gcc=$cross-gcc
    sysroot=/usr/$cross
    command -v "$gcc" >/dev/null || apt_install "gcc-$cross"
    # The C library headers and start files (a Recommends of the compiler,
    # which --no-install-recommends leaves out; C dependencies need them).
    [ -e "$sysroot/include/stdio.h" ] || apt_install "libc6-dev-$debarch-cross"
    command -v "$qemu" >/dev/null || apt_install qemu-user
    rustup target list --installed | grep -qx "$t" || rustup target add "$t"

    env_triple="$(echo "$t" | tr 'a-z-' 'A-Z_')"
    export "CARGO_TARGET_${env_triple}_LINKER=$gcc"
    export "CC_${t//-/_}=$gcc"
    flags=(--target "$t" --bin meshrelay)
    case "$profile" in
        debug) ;;
        *) flags+=(--profile "$profile") ;;
    esac
    echo "cross.sh: building $t ($profile)" >&2
    cargo build "${flags[@]}"
    bin="target/$t/$profile/meshrelay"
    file "$bin" 2>/dev/null || true
    "$cross-strip" -o "$bin.stripped" "$bin"
    echo "cross.sh: $t binary: $(stat -c %s "$bin") bytes, stripped $(stat -c %s "$bin.stripped") bytes" >&2

    t0=$(ms)
    run_bin "" --version
    echo "cross.sh: --version under $qemu: $(($(ms) - t0)) ms" >&2
    echo "cross.sh: meshrelay demo under $qemu" >&2
    # The demo starts its daemons with its own path (current_exe), which under
    # qemu-user is the target binary: binfmt_misc runs them under qemu too when
    # it is registered; otherwise only `demo --basics` can run in one process,
    # and the chain scenario below starts each daemon under qemu itself.
    if [ -e "/proc/sys/fs/binfmt_misc/${qemu}" ] || [ -e "/proc/sys/fs/binfmt_misc/qemu-${qemu#qemu-}" ]; then
        QEMU_LD_PREFIX="$sysroot" "$bin" demo
    else
        echo "cross.sh: binfmt_misc has no $qemu: running demo --basics (one process)" >&2
        run_bin "" demo --basics
    fi
    echo "cross.sh: chain scenario under $qemu" >&2
    chain
    if [ "$package" -eq 1 ]; then
        bash scripts/package.sh --target "$t" --binary "$bin" --strip
    fi
done

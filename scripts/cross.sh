#!/usr/bin/env bash
# Cross-builds meshrelay for Raspberry Pi targets and runs `meshrelay demo`
# (three daemons on 127.0.0.1) under qemu-user. Installs what is missing:
# the rustup targets, Debian's cross compilers and qemu-user.
#
#   scripts/cross.sh [--debug] [--package] [TRIPLE]...
#
# TRIPLE     aarch64-unknown-linux-gnu and/or armv7-unknown-linux-gnueabihf
#            (default: both)
# --debug    a debug build (faster to build, slow to run under qemu)
# --package  also build the .deb of each (scripts/package.sh)
#
# A release build of the whole dependency tree takes long on a small
# machine: do not run it while others compile on the same cores.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
package=0
targets=()
for a in "$@"; do
    case "$a" in
        --debug) profile=debug ;;
        --package) package=1 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
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

for t in "${targets[@]}"; do
    case "$t" in
        aarch64-unknown-linux-gnu) gcc=aarch64-linux-gnu-gcc; pkg=gcc-aarch64-linux-gnu; qemu=qemu-aarch64; sysroot=/usr/aarch64-linux-gnu ;;
        armv7-unknown-linux-gnueabihf) gcc=arm-linux-gnueabihf-gcc; pkg=gcc-arm-linux-gnueabihf; qemu=qemu-arm; sysroot=/usr/arm-linux-gnueabihf ;;
        *) echo "cross.sh: unsupported target $t" >&2; exit 2 ;;
    esac
    command -v "$gcc" >/dev/null || apt_install "$pkg"
    command -v "$qemu" >/dev/null || apt_install qemu-user
    rustup target list --installed | grep -qx "$t" || rustup target add "$t"

    env_triple="$(echo "$t" | tr 'a-z-' 'A-Z_')"
    export "CARGO_TARGET_${env_triple}_LINKER=$gcc"
    export "CC_${t//-/_}=$gcc"
    flags=(--target "$t" --bin meshrelay)
    [ "$profile" = release ] && flags+=(--release)
    echo "cross.sh: building $t ($profile)" >&2
    cargo build "${flags[@]}"
    bin="target/$t/$profile/meshrelay"
    file "$bin" 2>/dev/null || true

    echo "cross.sh: meshrelay demo under $qemu" >&2
    # The demo starts its daemons with its own path (current_exe), which under
    # qemu-user is the target binary: binfmt_misc runs them under qemu too when
    # it is registered; otherwise only `demo --basics` can run.
    if [ -e "/proc/sys/fs/binfmt_misc/${qemu}" ] || [ -e "/proc/sys/fs/binfmt_misc/qemu-${qemu#qemu-}" ]; then
        QEMU_LD_PREFIX="$sysroot" "$bin" demo
    else
        echo "cross.sh: binfmt_misc has no $qemu: running demo --basics (one process)" >&2
        QEMU_LD_PREFIX="$sysroot" "$qemu" -L "$sysroot" "$bin" demo --basics
    fi
    if [ "$package" -eq 1 ]; then
        bash scripts/package.sh --target "$t" --binary "$bin"
    fi
done

#!/usr/bin/env bash
# Builds the Debian package of meshrelay from an already built binary, with
# dpkg-deb only (no cargo tools). See README.md, "Field relay".
#
#   scripts/package.sh [--target TRIPLE] [--binary PATH] [--out DIR]
#
# --target TRIPLE  the Rust target the binary was built for (sets the Debian
#                  architecture; default: this machine's)
# --binary PATH    the binary (default: target/[TRIPLE/]field/meshrelay, the
#                  `field` profile's, else target/[TRIPLE/]release/meshrelay)
# --out DIR        where the .deb goes (default: target/debian)
# --fast           gzip -1 instead of xz (for tests of large debug binaries)
# --strip          install the binary stripped of symbols and debug info
#                  (with the target's binutils, e.g. aarch64-linux-gnu-strip)
#
# The package installs /usr/bin/meshrelay, the systemd unit in
# /lib/systemd/system (not enabled), /etc/meshrelay/meshrelay.toml (a
# conffile) and creates the system user `meshrelay` on configure.
set -euo pipefail
cd "$(dirname "$0")/.."

target=""
binary=""
out="target/debian"
compress=(-Zxz)
strip=0
while [ $# -gt 0 ]; do
    case "$1" in
        --target) target="$2"; shift 2 ;;
        --binary) binary="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --fast) compress=(-Zgzip -z1); shift ;;
        --strip) strip=1; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "package.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

if [ -z "$binary" ]; then
    # The `field` profile's build (what packages ship), else `release`'s.
    dir="target${target:+/$target}"
    binary="$dir/field/meshrelay"
    [ -x "$binary" ] || binary="$dir/release/meshrelay"
fi
if [ ! -x "$binary" ]; then
    echo "package.sh: $binary is not an executable: build it first (cargo build --profile field${target:+ --target $target})" >&2
    exit 2
fi

case "$target" in
    "") arch="$(dpkg --print-architecture)" ;;
    x86_64-*linux-gnu) arch=amd64 ;;
    aarch64-*linux-gnu) arch=arm64 ;;
    armv7-*linux-gnueabihf|arm-*linux-gnueabihf) arch=armhf ;;
    i686-*linux-gnu) arch=i386 ;;
    riscv64gc-*linux-gnu) arch=riscv64 ;;
    *) echo "package.sh: no Debian architecture known for $target" >&2; exit 2 ;;
esac

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
[ -n "$version" ] || { echo "package.sh: no version in Cargo.toml" >&2; exit 1; }

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
root="$stage/meshrelay_${version}_${arch}"

install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
    "$root/etc/meshrelay" "$root/usr/share/doc/meshrelay"
install -m 0755 "$binary" "$root/usr/bin/meshrelay"
if [ "$strip" -eq 1 ]; then
    case "$target" in
        aarch64-*linux-gnu) strip_tool=aarch64-linux-gnu-strip ;;
        armv7-*linux-gnueabihf|arm-*linux-gnueabihf) strip_tool=arm-linux-gnueabihf-strip ;;
        *) strip_tool=strip ;;
    esac
    "$strip_tool" "$root/usr/bin/meshrelay"
fi
install -m 0644 packaging/meshrelay.service "$root/lib/systemd/system/meshrelay.service"
install -m 0644 packaging/meshrelay.toml "$root/etc/meshrelay/meshrelay.toml"
install -m 0644 README.md "$root/usr/share/doc/meshrelay/README.md"
cat > "$root/usr/share/doc/meshrelay/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: meshrelay

Files: *
Copyright: the meshrelay authors
License: MIT or Apache-2.0
EOF
chmod 0644 "$root/usr/share/doc/meshrelay/copyright"

installed_kib="$(du -k -s "$root" | cut -f1)"
cat > "$root/DEBIAN/control" <<EOF
Package: meshrelay
Version: $version
Architecture: $arch
Maintainer: meshrelay developers <meshrelay@localhost>
Installed-Size: $installed_kib
Depends: adduser, libc6
Recommends: bluez
Section: net
Priority: optional
Description: delay-tolerant, end-to-end encrypted mesh relay
 meshrelay carries end-to-end encrypted room messages over Bluetooth LE and
 LAN meshes, stores and forwards them for devices that are offline, and syncs
 with a Matrix homeserver when one is reachable. This package runs it as a
 hardened systemd service (not enabled by default) for headless relay nodes.
EOF
echo "/etc/meshrelay/meshrelay.toml" > "$root/DEBIAN/conffiles"

cat > "$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
# Creates the system user; enables and starts nothing.
set -e
if [ "$1" = configure ]; then
    if ! getent passwd meshrelay >/dev/null; then
        if command -v adduser >/dev/null 2>&1; then
            adduser --system --group --home /var/lib/meshrelay --no-create-home \
                --gecos "meshrelay relay" meshrelay >/dev/null
        else
            useradd --system --user-group --home-dir /var/lib/meshrelay --no-create-home \
                --shell /usr/sbin/nologin --comment "meshrelay relay" meshrelay
        fi
    fi
    # BlueZ's D-Bus policy admits the bluetooth group where it exists.
    if getent group bluetooth >/dev/null; then
        usermod -a -G bluetooth meshrelay || true
    fi
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null 2>&1 || true
    fi
fi
exit 0
EOF

cat > "$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
# Stops the service before its binary goes away.
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl stop meshrelay.service >/dev/null 2>&1 || true
fi
exit 0
EOF

cat > "$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
# On purge, removes the state (identity, store) and the system user.
set -e
if [ "$1" = purge ]; then
    rm -rf /var/lib/meshrelay
    if getent passwd meshrelay >/dev/null; then
        if command -v deluser >/dev/null 2>&1; then
            deluser --system meshrelay >/dev/null 2>&1 || true
        else
            userdel meshrelay >/dev/null 2>&1 || true
        fi
    fi
fi
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || true
fi
exit 0
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles"

mkdir -p "$out"
deb="$out/meshrelay_${version}_${arch}.deb"
dpkg-deb --root-owner-group "${compress[@]}" --build "$root" "$deb" >/dev/null
echo "$deb"

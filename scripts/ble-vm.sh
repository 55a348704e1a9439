#!/usr/bin/env bash
# Real BlueZ test of the BLE adapter (issue 9), opt-in: boots Debian's kernel
# under QEMU/TCG (no network card), shares the host root read-only over
# virtio-9p, and inside the guest loads hci_vhci, starts a private system
# bus, `btvirt -L -l3` and `bluetoothd -n -E`, then runs
# scripts/ble-vm-guest.sh on the first two controllers BlueZ manages: two
# real `meshrelay run` daemons (the host-built binary), one per controller,
# no mDNS and no LAN peers, must find each other over BLE (unpaired GATT,
# Noise link) and sync a room through their control sockets and the normal
# CLI. (btvirt's first controller, hci0, stays unconfigured here, hence
# three.) A run takes 2–4 minutes under TCG on a loaded 2-core machine; the
# log of a passing run is reports/ble-vm.log.
#
#   bash scripts/ble-vm.sh                      # builds meshrelay, runs the VM, prints the guest log
#   BLE_VM_PRIVACY=device bash scripts/ble-vm.sh  # BlueZ Privacy setting (default: off)
#
# Needs (Debian): qemu-system-x86 bluez bluez-test-tools dbus busybox-static,
# plus linux-image-amd64, which the script downloads and unpacks into
# $BLE_VM_DIR (default target/ble-vm) without installing it. Exit code: 0
# when the guest printed BLE_VM_RESULT=PASS, 1 when it printed a failure, 3
# on setup failure (no result).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# Not under /tmp: the guest mounts a tmpfs there.
WORK=${BLE_VM_DIR:-$ROOT/target/ble-vm}
TIMEOUT=${BLE_VM_TIMEOUT:-900}
mkdir -p "$WORK"

for tool in qemu-system-x86_64 btvirt bluetoothd dbus-daemon busybox cpio; do
  command -v "$tool" >/dev/null || {
    echo "missing $tool: apt-get install qemu-system-x86 bluez bluez-test-tools dbus busybox-static cpio" >&2
    exit 3
  }
done

# 1. The guest kernel and its modules, unpacked (not installed).
if ! ls "$WORK"/kernel/boot/vmlinuz-* >/dev/null 2>&1; then
  (cd "$WORK" && ls linux-image-*.deb >/dev/null 2>&1 ||
    apt-get download "$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image/{print $2; exit}')")
  rm -rf "$WORK/kernel" && mkdir -p "$WORK/kernel"
  dpkg -x "$(ls "$WORK"/linux-image-*.deb | head -1)" "$WORK/kernel"
fi
KERNEL=$(ls "$WORK"/kernel/boot/vmlinuz-* | head -1)
KVER=$(basename "$(ls -d "$WORK"/kernel/lib/modules/* | head -1)")
MODS="$WORK/kernel/lib/modules/$KVER"
[ -f "$MODS/modules.dep" ] || depmod -b "$WORK/kernel" "$KVER"

# 2. The program under test, built on the host (the guest sees the host root).
cargo build --bin meshrelay
BIN=${BLE_VM_BIN:-$ROOT/target/debug/meshrelay}

# 3. A tiny initramfs: busybox, the 9p modules, and /init.
INITRD="$WORK/initrd"
rm -rf "$INITRD" && mkdir -p "$INITRD"/{bin,dev,proc,sys,host,mods}
cp "$(command -v busybox)" "$INITRD/bin/busybox"
# The 9p and virtio-pci modules with their dependencies, in load order.
i=0
for f in $(for m in virtio_pci 9pnet_virtio 9p; do
  modprobe -d "$WORK/kernel" -S "$KVER" --show-depends "$m"
done | awk '$1 == "insmod" {print $2}' | awk '!seen[$0]++'); do
  i=$((i + 1))
  cp "$f" "$INITRD/mods/$(printf %02d $i)-$(basename "$f")"
done
cat >"$INITRD/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for f in /mods/*.ko*; do
  case "$f" in *.xz) xz -dc "$f" > /m.ko; insmod /m.ko;; *) insmod "$f";; esac
done
mount -t 9p -o trans=virtio,version=9p2000.L,ro hostroot /host || { echo "9p mount failed"; poweroff -f; }
for d in proc sys dev; do mount --bind /$d /host/$d; done
for d in tmp run var/run var/lib/bluetooth root; do [ -d /host/$d ] && mount -t tmpfs tmpfs /host/$d; done
exec chroot /host /bin/sh GUEST_SCRIPT
EOF
chmod +x "$INITRD/init"

# 4. What runs inside the guest (from the shared host root).
GUEST="$WORK/guest.sh"
cat >"$GUEST" <<EOF
#!/bin/sh
set -x
MODS=$MODS
BIN=$BIN
BTVIRT_ARGS="${BTVIRT_ARGS:--L -l3}"
PRIVACY=${BLE_VM_PRIVACY:-off}
GUEST_PART=$ROOT/scripts/ble-vm-guest.sh
export RUST_LOG="${RUST_LOG:-meshrelay::transport::ble=debug,meshrelay=info}"
EOF
cat >>"$GUEST" <<'EOF'
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
for m in ecb algif_skcipher algif_hash cmac ecdh_generic bluetooth hci_vhci; do
  modprobe -d "${MODS%/lib/modules/*}" "$m" || echo "modprobe $m failed"
done
mkdir -p /run/dbus /var/lib/bluetooth
dbus-daemon --system --fork --nopidfile || dbus-daemon --config-file=/usr/share/dbus-1/system.conf --fork --nopidfile
sleep 1
btvirt ${BTVIRT_ARGS:--L -l2} &
sleep 2
# LE privacy on (the host's main.conf is read-only here: bind a copy over it).
printf '[General]\nPrivacy = %s\n' "${PRIVACY:-device}" > /run/main.conf
mount --bind /run/main.conf /etc/bluetooth/main.conf 2>/dev/null || true
bluetoothd -n -E -f /run/main.conf &
BTD=$!
# Wait until bluetoothd has registered both controllers.
for i in $(seq 1 20); do
  [ "$(btmgmt info 2>/dev/null | grep -c '^hci')" -ge 2 ] && break
  sleep 1
done 2>/dev/null
# bluetoothd keeps each controller's IRK (needed for LE privacy) under
# /var/lib/bluetooth/ADDR, which it does not create itself: create, restart.
for a in $(btmgmt info 2>/dev/null | awk '$1 == "addr" {print $2}'); do mkdir -p "/var/lib/bluetooth/$a"; done
kill "$BTD"
sleep 1
bluetoothd -n -E -f /run/main.conf &
for i in $(seq 1 20); do
  [ "$(btmgmt info 2>/dev/null | grep -c '^hci')" -ge 2 ] && break
  sleep 1
done 2>/dev/null
set +x
bluetoothctl list
btmgmt info
for h in /sys/class/bluetooth/hci*; do echo "$h: $(cat $h/address 2>/dev/null)"; done
set -x
echo "=== two meshrelay daemons ==="
set -- $(btmgmt info | awk -F: '/^hci[0-9]+:/{print $1}' | sort | head -2)
set +x
BIN=$BIN ADAPTER_A=$1 ADAPTER_B=$2 sh "$GUEST_PART"
poweroff -f
EOF
chmod +x "$GUEST"
sed -i "s|GUEST_SCRIPT|$GUEST|" "$INITRD/init"
(cd "$INITRD" && find . | cpio -o -H newc 2>/dev/null | gzip -1) >"$WORK/initrd.cpio.gz"

# 5. Boot.
LOG="$WORK/guest.log"
timeout "$TIMEOUT" qemu-system-x86_64 -M q35 -accel tcg -m 1536 -smp 2 \
  -nographic -no-reboot -nic none \
  -kernel "$KERNEL" -initrd "$WORK/initrd.cpio.gz" \
  -append "console=ttyS0 panic=-1 quiet loglevel=3" \
  -fsdev local,id=hostroot,path=/,security_model=none,readonly=on \
  -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot | tee "$LOG"
result=$(grep -a -o 'BLE_VM_RESULT=[A-Z]*' "$LOG" | tail -1 | cut -d= -f2)
echo "guest log: $LOG; result: ${result:-none}"
case "$result" in PASS) exit 0 ;; FAIL) exit 1 ;; *) exit 3 ;; esac

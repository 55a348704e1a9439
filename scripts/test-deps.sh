#!/usr/bin/env bash
# Installs the system tools the tests need when they are missing (Debian):
# systemd-analyze (the service unit tests), dpkg-deb (the package test),
# adduser, faketime (libfaketime: the clock-jump test), chromium (the web app
# test drives it headless). Runs `apt-get update` once, and only when something is missing.
# Called by .ci/run before the tests.
set -euo pipefail

declare -A want=(
    [systemd-analyze]=systemd
    [dpkg-deb]=dpkg
    [adduser]=adduser
    [faketime]=faketime
    [chromium]=chromium
)
missing=()
for tool in "${!want[@]}"; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
        missing+=("${want[$tool]}")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "test-deps.sh: missing ${missing[*]} and no apt-get: install them by hand" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "test-deps.sh: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"

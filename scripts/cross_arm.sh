#!/bin/sh
# Fetch an aarch64 cross compiler and qemu-user from Debian's packages into a folder, without root
# (apt-get download + dpkg -x), for tests/unit/test_native_arm.py:
#     scripts/cross_arm.sh /tmp/xarm && STORYLOOM_CROSS_ROOT=/tmp/xarm/root pytest tests/unit/test_native_arm.py
set -eu
dest="${1:-/tmp/xarm}"
mkdir -p "$dest/debs" "$dest/root"
cd "$dest/debs"
apt-get download qemu-user-static gcc-12-aarch64-linux-gnu cpp-12-aarch64-linux-gnu \
    binutils-aarch64-linux-gnu libc6-dev-arm64-cross libc6-arm64-cross linux-libc-dev-arm64-cross \
    libgcc-12-dev-arm64-cross libgcc-s1-arm64-cross libgomp1-arm64-cross libatomic1-arm64-cross \
    libasan8-arm64-cross libhwasan0-arm64-cross liblsan0-arm64-cross libtsan2-arm64-cross \
    libubsan1-arm64-cross libitm1-arm64-cross libstdc++6-arm64-cross
for deb in ./*.deb; do dpkg -x "$deb" "$dest/root"; done
echo "STORYLOOM_CROSS_ROOT=$dest/root"

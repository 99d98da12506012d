#!/usr/bin/env bash
# Runs inside a cross image (cross/Dockerfile.*) while docker builds it: installs the cross
# C toolchain, libclang (bindgen: v4l2-sys-mit) and the `build` packages of
# cross/target-packages.txt for the target architecture through Debian multiarch.
# Usage: install-target-packages.sh DEB_ARCH GNU_TRIPLE   (e.g. arm64 aarch64-linux-gnu)
#
# In the image nothing of the host architecture competes with the target's -dev packages,
# so multiarch works here; on a developer's machine it does not (see cross/README.md), which
# is why cross/build.sh uses a sysroot instead.
set -euo pipefail
arch=$1
gnu=$2
here=$(cd "$(dirname "$0")" && pwd)
mapfile -t packages < <("$here/target-packages.sh" build)

export DEBIAN_FRONTEND=noninteractive
dpkg --add-architecture "$arch"
apt-get update -q
# Host side: a native cc for build scripts and proc-macros, pkg-config, libclang for
# bindgen, the cross gcc. Target side: the packages from the list, as <name>:<arch>.
apt-get install -y -q --no-install-recommends \
  ca-certificates gcc libc6-dev pkg-config libclang-dev \
  "gcc-$gnu" "libc6-dev-$arch-cross" \
  "${packages[@]/%/:$arch}"
rm -rf /var/lib/apt/lists/*

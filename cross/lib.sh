# shellcheck shell=bash disable=SC2034
# (SC2034: the variables set here are used by the scripts that source this file.)
# Shared by cross/build.sh and cross/check.sh (sourced, not run). The per-target table,
# the cache of sysroots, the host packages and the environment of a cross-build.
# Nothing here is specific to this machine: every path is derived or overridable.

cross_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(cd "$cross_dir/.." && pwd)

# Sysroots live outside the repository: big (1.5 GB for arm64), machine-local, rebuilt
# from cross/target-packages.txt whenever it changes.
if [ -n "${ROOMCAST_CROSS_CACHE:-}" ]; then
  cache_dir=$ROOMCAST_CROSS_CACHE
elif [ "$(id -u)" -eq 0 ]; then
  cache_dir=/var/cache/roomcast-cross
else
  cache_dir=${XDG_CACHE_HOME:-$HOME/.cache}/roomcast-cross
fi

# The cross-builds get their own target dir: another compiler (Debian's rustc, not
# rustup's), -Zbuild-std and other flags would otherwise keep invalidating the native build.
# One per release (cross_release): a build against Debian 13's libraries is another build.
cross_target_base=${ROOMCAST_CROSS_TARGET_DIR:-$repo_dir/target/cross}

# Debian's rustc/cargo (rustc-web, cargo-web): rustup's toolchain here has no std for
# the board targets, and Debian's rust-web-src lets -Zbuild-std build one.
debian_cargo=/usr/bin/cargo
debian_rustc=/usr/bin/rustc

# cross_release NAME: the Debian release the boards run. Sets release, sysroot_suite,
# sysroot_mirrors and cross_target_dir.
#   debian12  bookworm, Raspberry Pi OS bookworm (GStreamer 1.22); target/cross/
#   debian13  trixie, today's Raspberry Pi OS (GStreamer 1.26); target/cross-debian13/
# The apt sources of a sysroot: the suite and its updates, like the boards. Not its
# security suite: bookworm-security's armhf index fails the hash check on this mirror,
# and the security uploads do not change the ABI the crate links against.
cross_release() {
  case "$1" in
    debian12)
      sysroot_suite=bookworm
      cross_target_dir=$cross_target_base
      ;;
    debian13)
      sysroot_suite=trixie
      cross_target_dir=$cross_target_base-debian13
      ;;
    *)
      echo "unknown release '$1': use debian12 or debian13" >&2
      return 64
      ;;
  esac
  release=$1
  sysroot_mirrors=(
    "deb http://deb.debian.org/debian $sysroot_suite main"
    "deb http://deb.debian.org/debian $sysroot_suite-updates main"
  )
}
cross_release debian12

# cross_release_arg ARG: 0 (true) when ARG names a release, so that the scripts take an
# optional release first: `cross/build.sh [debian12|debian13] [aarch64|armv7|all]`.
cross_release_arg() {
  case "${1:-}" in debian12 | debian13) return 0 ;; *) return 1 ;; esac
}

# What the host needs (Debian package names).
host_packages=(
  gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf   # cross linkers and C compilers (ring, alsa-sys probe)
  rustc-web cargo-web rust-web-src                # Debian's Rust 1.96 and its std sources
  qemu-user-static                                # runs the results (cross/check.sh)
  mmdebstrap                                      # makes the sysroots
  pkg-config libclang-dev                         # -sys crates' build scripts; bindgen (v4l2-sys-mit)
  dpkg-dev file                                   # cargo-deb's dpkg-shlibdeps; build.sh's size line
)

# cross_target NAME: sets triple, deb_arch, gnu, qemu, sysroot for aarch64 or armv7.
cross_target() {
  case "$1" in
    aarch64)
      triple=aarch64-unknown-linux-gnu
      deb_arch=arm64
      gnu=aarch64-linux-gnu
      qemu='qemu-aarch64-static'
      ;;
    armv7)
      if [ "$release" != debian12 ]; then
        # Debian 13 armhf moved to a 64-bit time_t; Rust's armv7-unknown-linux-gnueabihf
        # (its libc crate and the std built here) still assume 32 bits, so every struct
        # holding a time_t would be laid out differently from the C libraries'.
        echo "armv7 is built for Debian 12 only: Debian 13 armhf has a 64-bit time_t," \
          "which Rust's armv7-unknown-linux-gnueabihf does not assume (cross/README.md)" >&2
        return 64
      fi
      triple=armv7-unknown-linux-gnueabihf
      deb_arch=armhf
      gnu=arm-linux-gnueabihf
      qemu='qemu-arm-static'
      ;;
    *)
      echo "unknown target '$1': use aarch64, armv7 or all" >&2
      return 64
      ;;
  esac
  sysroot=$cache_dir/sysroot-$sysroot_suite-$deb_arch
}

# cross_targets ARG: the target names an `aarch64|armv7|all` argument stands for (all:
# aarch64 only on Debian 13, see cross_target).
cross_targets() {
  case "${1:-all}" in
    all) if [ "$release" = debian12 ]; then echo aarch64 armv7; else echo aarch64; fi ;;
    aarch64 | armv7) echo "$1" ;;
    *)
      echo "unknown target '$1': use aarch64, armv7 or all" >&2
      return 64
      ;;
  esac
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_host_packages() {
  local missing=() p
  for p in "${host_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  echo "cross: installing host packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# The sysroot's stamp: what it was made from. A different package list (or suite, or
# mirrors) makes a new sysroot.
sysroot_stamp() {
  {
    echo "$sysroot_suite $deb_arch"
    printf '%s\n' "${sysroot_mirrors[@]}"
    "$cross_dir/target-packages.sh" all
  } | sha256sum | cut -d' ' -f1
}

# ensure_sysroot: (re)makes $sysroot with mmdebstrap unless its stamp is current.
# Built beside it and renamed into place, so an interrupted run never leaves half a sysroot.
ensure_sysroot() {
  local stamp packages tmp
  stamp=$(sysroot_stamp)
  if [ -f "$sysroot/.roomcast-stamp" ] && [ "$(cat "$sysroot/.roomcast-stamp")" = "$stamp" ]; then
    echo "cross: sysroot $sysroot is current"
    return 0
  fi
  packages=$("$cross_dir/target-packages.sh" all | paste -sd, -)
  tmp=$sysroot.new
  as_root mkdir -p "$cache_dir"
  as_root rm -rf "$tmp"
  echo "cross: making sysroot $sysroot ($deb_arch: $packages)"
  local start=$SECONDS
  # --variant=extract unpacks the packages and their dependencies without running any
  # maintainer script: nothing of the target architecture ever executes.
  as_root mmdebstrap --quiet --variant=extract --architectures="$deb_arch" \
    --include="$packages" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    "$sysroot_suite" "$tmp" "${sysroot_mirrors[@]}"
  echo "$stamp" | as_root tee "$tmp/.roomcast-stamp" >/dev/null
  as_root rm -rf "$sysroot"
  as_root mv "$tmp" "$sysroot"
  echo "cross: sysroot ready in $((SECONDS - start)) s, $(du -sh "$sysroot" | cut -f1)"
}

# export_cross_env: the environment of a cross cargo build for the current target. Only
# environment variables: no cargo config with this machine's paths is written anywhere.
export_cross_env() {
  local t=${triple//-/_}
  local T=${t^^}
  export RUSTC=$debian_rustc
  export CARGO_TARGET_DIR=$cross_target_dir
  # -Zbuild-std on a stable compiler (Debian's rustc 1.96 with rust-web-src).
  export RUSTC_BOOTSTRAP=1
  export "CARGO_TARGET_${T}_LINKER=$gnu-gcc"
  # aes_armv8: the `aes` crate's ARMv8 AES (SRTP), as .cargo/config.toml sets it.
  local cfg=
  [ "$triple" = aarch64-unknown-linux-gnu ] && cfg=" --cfg aes_armv8"
  export "CARGO_TARGET_${T}_RUSTFLAGS=-C link-arg=--sysroot=$sysroot$cfg"
  export "CARGO_TARGET_${T}_RUNNER=$qemu -L $sysroot"
  # C code of -sys crates (ring, alsa-sys's time64 probe) against the target's headers.
  export "CC_${t}=$gnu-gcc"
  export "AR_${t}=$gnu-ar"
  export "CFLAGS_${t}=--sysroot=$sysroot"
  # pkg-config reads only the sysroot's .pc files and prefixes their paths with it.
  export PKG_CONFIG_ALLOW_CROSS=1
  export "PKG_CONFIG_SYSROOT_DIR_${t}=$sysroot"
  export "PKG_CONFIG_LIBDIR_${t}=$sysroot/usr/lib/$gnu/pkgconfig:$sysroot/usr/share/pkgconfig"
  # bindgen (v4l2-sys-mit): clang, told the target by bindgen, reads the sysroot's headers.
  export "BINDGEN_EXTRA_CLANG_ARGS_${t}=--sysroot=$sysroot"
}

# qemu_env: what a cross-built GStreamer program needs to run under qemu-user here.
# binfmt_misc is not mounted, so programs are started as `$qemu -L $sysroot prog`.
qemu_env() {
  export GST_PLUGIN_SYSTEM_PATH=$sysroot/usr/lib/$gnu/gstreamer-1.0
  unset GST_PLUGIN_PATH GST_PLUGIN_PATH_1_0
  # The plugin scanner is a target binary that cannot be exec'd without binfmt: scan the
  # plugins in-process instead.
  export GST_REGISTRY_FORK=no
  # A registry per target, not the host's ~/.cache one.
  export GST_REGISTRY=$cache_dir/gst-registry-$sysroot_suite-$deb_arch.bin
}

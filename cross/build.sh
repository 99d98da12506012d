#!/usr/bin/env bash
# Cross-builds roomcast (release) for the boards on THIS machine, without docker:
# Debian's rustc/cargo with -Zbuild-std, the cross gcc, and a bookworm sysroot per target
# made with mmdebstrap from cross/target-packages.txt (cached outside the repository).
#
#   cross/build.sh [debian12|debian13] [aarch64|armv7|all] [extra cargo build arguments]
#
# debian12 (the default): against bookworm (Raspberry Pi OS bookworm), binaries in
# target/cross/<triple>/release/; debian13: against trixie (today's Raspberry Pi OS), in
# target/cross-debian13/<triple>/release/, aarch64 only (cross/README.md).
#
# Builds the `roomcast` binary and examples/pipeline_smoke.rs into
# target/cross/<triple>/release/, prints the build time and the stripped binary size.
# Idempotent: re-running reuses the host packages, the sysroots and the incremental state.
# cross/check.sh then runs the results under qemu-user.
set -euo pipefail
# shellcheck source=cross/lib.sh
. "$(dirname "$0")/lib.sh"

if cross_release_arg "${1:-}"; then
  cross_release "$1"
  shift
fi
which=${1:-all}
[ "$#" -gt 0 ] && shift
targets=$(cross_targets "$which")

ensure_host_packages
for name in $targets; do
  cross_target "$name"
  ensure_sysroot
done

cd "$repo_dir"
for name in $targets; do
  (
    cross_target "$name"
    export_cross_env
    echo "cross: building $triple for $release ($sysroot_suite sysroot), release profile"
    start=$SECONDS
    # std is built from Debian's rust-web-src for the target (panic_abort: the release
    # profile's panic policy). nice: other builds share this machine's two cores.
    nice "$debian_cargo" build --release --locked --target "$triple" \
      -Zbuild-std=std,panic_abort \
      --bin roomcast --example pipeline_smoke "$@"
    seconds=$((SECONDS - start))
    bin=$cross_target_dir/$triple/release/roomcast
    size=$(stat -c %s "$bin")
    # The release profile strips already; report what a board would install.
    echo "cross: $triple: built in ${seconds} s; roomcast is $size bytes" \
      "($(awk -v s="$size" 'BEGIN { printf "%.1f MiB", s / 1048576 }')," \
      "$(file -b "$bin" | grep -o 'not stripped\|stripped'))"
  )
done

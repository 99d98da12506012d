#!/usr/bin/env bash
# Runs the cross-built binaries of cross/build.sh under qemu-user against their bookworm
# sysroot: `roomcast --version`, `roomcast check-config` on the example config, and
# examples/pipeline_smoke.rs (test sources through x264enc and opusenc to EOS).
#
#   cross/check.sh [debian12|debian13] [aarch64|armv7|all]
#
# debian13: the binaries of `cross/build.sh debian13` in a Debian 13 (trixie) arm64 root.
#
# Slow (qemu), so not part of scripts/test.sh or CI: run it after `cross/build.sh` when
# the dependencies, the release profile or cross/ change. Ends with "N passed, N failed".
set -euo pipefail
# shellcheck source=cross/lib.sh
. "$(dirname "$0")/lib.sh"

if cross_release_arg "${1:-}"; then
  cross_release "$1"
  shift
fi
targets=$(cross_targets "${1:-all}")
cd "$repo_dir"
version=$(awk -F'"' '/^version *=/ { print $2; exit }' Cargo.toml)
passed=0
failed=0

# check NAME EXPECTED_TEXT COMMAND...: runs COMMAND, shows its output, passes when it
# exits 0 and its stdout contains EXPECTED_TEXT.
check() {
  local name=$1 expected=$2 out rc start
  shift 2
  start=$SECONDS
  set +e
  out=$("$@" 2>"$log_dir/stderr")
  rc=$?
  set -e
  printf '%s\n' "$out" | sed 's/^/    /'
  sed 's/^/    stderr: /' "$log_dir/stderr"
  if [ "$rc" -eq 0 ] && [[ "$out" == *"$expected"* ]]; then
    echo "  ok   $name ($((SECONDS - start)) s)"
    passed=$((passed + 1))
  else
    echo "  FAIL $name: exit $rc, expected output containing '$expected'"
    failed=$((failed + 1))
  fi
}

log_dir=$(mktemp -d)
trap 'rm -rf "$log_dir"' EXIT

for name in $targets; do
  cross_target "$name"
  bin_dir=$cross_target_dir/$triple/release
  echo "cross check: $triple under $qemu in a $release ($sysroot_suite) root"
  if [ ! -x "$bin_dir/roomcast" ] || [ ! -x "$bin_dir/examples/pipeline_smoke" ] || [ ! -d "$sysroot" ]; then
    echo "  FAIL no build for $triple in $bin_dir (or no sysroot): run cross/build.sh $release $name first"
    failed=$((failed + 1))
    continue
  fi
  command -v "$qemu" >/dev/null || {
    echo "  FAIL $qemu not found: run cross/build.sh $release $name (it installs qemu-user-static)"
    failed=$((failed + 1))
    continue
  }
  qemu_env
  run=("$qemu" -L "$sysroot")
  check "$name: roomcast --version" "roomcast $version" \
    "${run[@]}" "$bin_dir/roomcast" --version
  check "$name: roomcast check-config" "config/roomcast.example.toml: ok: " \
    "${run[@]}" "$bin_dir/roomcast" check-config --config config/roomcast.example.toml
  check "$name: pipeline_smoke to EOS" "pipeline_smoke: EOS after" \
    "${run[@]}" "$bin_dir/examples/pipeline_smoke"
done

echo "cross check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

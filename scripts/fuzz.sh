#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, cargo-fuzz + libFuzzer with AddressSanitizer) for
# SECONDS each (default 60), one after the other, at the lowest CPU priority.
#
#   ./scripts/fuzz.sh [SECONDS] [TARGET...]     e.g. ./scripts/fuzz.sh 600
#   FUZZ_RUNS=1000000 ./scripts/fuzz.sh 3600    stop each at 1,000,000 executions instead
#
# Targets: mqtt_command, janus_message, config_file, persisted_state.
# Each run starts from the committed seeds (fuzz/seeds/<target>) plus what earlier runs
# found (fuzz/corpus/<target>, not committed). Limits: 10 s per input (a hang), 2 GiB RSS,
# 256 MiB for one allocation. A crash leaves its input in fuzz/artifacts/<target>/ and
# makes the script exit 1: copy it to fuzz/regressions/<target>/ (replayed by
# `cargo test`, tests/fuzz_seeds.rs), fix the code, and add a unit test next to it.
#
# Needs cargo-fuzz (installed here from crates.io if missing). cargo-fuzz wants nightly
# rustc flags; on a stable toolchain RUSTC_BOOTSTRAP=1 lets stable accept them.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

seconds=${1:-60}
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(mqtt_command janus_message config_file persisted_state)
fi

./scripts/install-deps.sh
if ! cargo fuzz --version >/dev/null 2>&1; then
  nice -n 10 cargo install cargo-fuzz --locked
fi
rustc --version | grep -q nightly || export RUSTC_BOOTSTRAP=1

cd fuzz
nice -n 19 cargo fuzz build

mkdir -p logs
summary=()
failed=0
for target in "${targets[@]}"; do
  dict=json.dict
  [ "$target" = config_file ] && dict=toml.dict
  mkdir -p "corpus/$target" "seeds/$target" "artifacts/$target"
  runs=()
  [ -n "${FUZZ_RUNS:-}" ] && runs=("-runs=$FUZZ_RUNS")
  log="logs/$target.log"
  echo "== fuzz: $target for ${seconds} s${FUZZ_RUNS:+ or $FUZZ_RUNS runs} (log: fuzz/$log)"
  started=$(date +%s)
  status=0
  nice -n 19 cargo fuzz run "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" "${runs[@]}" -timeout=10 -rss_limit_mb=2048 \
    -malloc_limit_mb=256 -dict="$root/fuzz/dicts/$dict" -print_final_stats=1 \
    -artifact_prefix="$root/fuzz/artifacts/$target/" > "$log" 2>&1 || status=$?
  elapsed=$(( $(date +%s) - started ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  corpus=$(ls "corpus/$target" | wc -l)
  if [ "$status" -eq 0 ]; then
    result=ok
  else
    result="FAILED (exit $status): $(grep -m1 -E 'panicked|ERROR: libFuzzer|SUMMARY' "$log" || echo see log)"
    failed=1
  fi
  summary+=("$(printf '%-16s %12s execs %6s s %8s exec/s  corpus %5s  %s' \
    "$target" "${execs:-?}" "$elapsed" "$(( ${execs:-0} / (elapsed > 0 ? elapsed : 1) ))" "$corpus" "$result")")
done
echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
exit "$failed"

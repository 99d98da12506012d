#!/usr/bin/env bash
# Runs one benchmark (default: media) in the private network namespace, with its own
# Janus, after building it outside (the namespace has no network).
# Usage: ./scripts/bench.sh [media|mqtt_control|churn|uplink] [ARGS...]   (benches/<name>.rs;
# ARGS go to the benchmark, e.g. ./scripts/bench.sh churn 200 4 10 race)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
name=${1:-media}
shift || true
cargo bench --locked --bench "$name" --no-run
exec ./scripts/in-netns.sh cargo bench --offline --locked --bench "$name" -- "$@"

#!/usr/bin/env bash
# Runs one benchmark (default: media) in the private network namespace, with its own
# Janus, after building it outside (the namespace has no network).
# Usage: ./scripts/bench.sh [media|...]   (benches/<name>.rs)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
name=${1:-media}
cargo bench --locked --bench "$name" --no-run
exec ./scripts/in-netns.sh cargo bench --offline --locked --bench "$name"

#!/usr/bin/env bash
# The test command (README, CI): installs what the build and tests need, checks format
# and lints, builds, then runs every test inside a private network namespace. The test
# harness starts its own Janus and mosquitto on free ports and stops them.
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# Build (and fetch crates) outside the namespace: inside it there is no network at all.
cargo test --no-run --locked
# --no-fail-fast: one failing test binary must not hide the others.
exec ./scripts/in-netns.sh cargo test --offline --locked --no-fail-fast "$@"

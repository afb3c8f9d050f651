#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, property tests, openraft's storage suite,
# and the cluster tests with real `halyard serve` processes. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh --test
# A target directory outside the clone lets a warm machine reuse the RocksDB build (~15 min).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/halyard-target}"
# One cargo invocation builds and tests with one feature set, so RocksDB is built once.
cargo test --locked --workspace --all-targets "$@"

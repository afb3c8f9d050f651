#!/usr/bin/env bash
# Builds Halyard and runs the demo: local nodes on 127.0.0.1 with embedded defaults.
# Arguments go to `halyard demo` (e.g. --nodes 3, --data-dir DIR). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/halyard-target}"
# Same cargo invocation as scripts/test.sh (tests included), so both share one RocksDB build
# instead of building it twice with different feature sets.
cargo test --locked --workspace --all-targets --no-run
exec "$CARGO_TARGET_DIR/debug/halyard" demo "$@"

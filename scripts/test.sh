#!/usr/bin/env bash
# Runs every test of the workspace: formatting and clippy (warnings are errors), unit tests,
# property tests, openraft's storage suite, the golden bytes of the data format, the tidy
# rules, and the cluster tests with real `halyard serve` processes (the namespace testbed
# and Jepsen campaign through `halyard-lab`). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh --test
# A target directory outside the clone lets a warm machine reuse the RocksDB build (~15 min).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/halyard-target}"
cargo fmt --all --check
# The deliberately broken build (SMTP 250 before commit) that the Jepsen test must catch:
# only halyard-mta and halyard-node are built again with the feature. It is a `cargo test`
# build (of a test of the halyard-node package, so that its `halyard` binary is built) so
# that dependencies get the same features as the test build below and RocksDB is built once;
# a plain `cargo build` would build them again.
cargo test --locked --workspace --test cli --no-run --features halyard-node/jepsen-broken-ack
cp "$CARGO_TARGET_DIR/debug/halyard" "$CARGO_TARGET_DIR/debug/halyard-broken-ack"
export HALYARD_BROKEN_BINARY="$CARGO_TARGET_DIR/debug/halyard-broken-ack"
# One cargo invocation builds and tests with one feature set, so RocksDB is built once.
cargo test --locked --workspace --all-targets --no-fail-fast "$@"
# After the tests, so that a lint never hides a failing test. Clippy's check build does not
# share librocksdb-sys's build-script output with the test build, and would compile RocksDB's
# C++ a second time (~12 minutes) for nothing a check needs: ROCKSDB_LIB_DIR makes that
# build script skip it (a check links nothing).
ROCKSDB_LIB_DIR=/nonexistent cargo clippy --locked --workspace --all-targets -- -D warnings
# Every fuzz target for a few seconds under AFL++ (instrumented build of its own, reusing the
# RocksDB library built above); longer campaigns: scripts/fuzz.sh TARGET SECONDS.
./scripts/fuzz.sh --all "${HALYARD_FUZZ_SECS:-10}"

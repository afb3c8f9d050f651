#!/usr/bin/env bash
# Failover benchmark (root): a 3-node `halyard-lab cluster up` testbed in network namespaces,
# then COUNT kill -9 drills of rg1's master (each: kill, wait for the first SMTP banner of
# the new master on the floating address, restart the killed node, let the preferred master
# take the group back) and COUNT graceful `ctl failover` drills back and forth. Prints p50 /
# p99 / max of the time to service on the address as a client on the host sees it.
#
#   ./scripts/bench-failover.sh          # 50 + 50 drills (about 6 minutes)
#   COUNT=10 ./scripts/bench-failover.sh
#
# Leaves nothing running; the testbed is removed even when a drill fails.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-50}
./scripts/deps.sh --test
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/halyard-target}
# The release build, as the SMTP benchmark (the first run builds it: ~25 minutes on 2 cores).
cargo build --release --locked --workspace
LAB=$CARGO_TARGET_DIR/release/halyard-lab
PREFIX=hb$(printf '%04x' $(( $$ & 0xffff )))
trap '"$LAB" cluster down --prefix "$PREFIX" >/dev/null 2>&1 || true' EXIT
"$LAB" cluster up --prefix "$PREFIX" --nodes 3 >/dev/null
"$LAB" cluster drill --prefix "$PREFIX" --kind kill --count "$COUNT" 2>/dev/null
"$LAB" cluster drill --prefix "$PREFIX" --kind switchover --count "$COUNT" 2>/dev/null | tail -n +3

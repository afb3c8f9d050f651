#!/usr/bin/env bash
# Leases lost under load, one runtime vs the consensus/service split, side by side in one run:
# a 3-node local cluster (real `halyard serve` processes) under `halyard-lab bench-access`
# (10 IMAP clients: APPEND, then FETCH), with and without busy threads beside it, each mode
# ROUNDS times, alternating. Prints a table; the full output of each run goes to $OUT.
#
#   scripts/bench-lease.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
SECS="${2:-15}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/halyard-target}"
cargo build --locked --workspace --all-targets --quiet
LAB="$CARGO_TARGET_DIR/debug/halyard-lab"
OUT="${OUT:-$(mktemp -d /tmp/halyard-bench-lease.XXXXXX)}"
mkdir -p "$OUT"
printf '%-7s %5s %5s %12s %14s %10s %10s %8s\n' runtimes hogs round "leases lost" "addresses taken" APPEND/s FETCH/s failed
for hogs in 2 0; do
  for round in $(seq 1 "$ROUNDS"); do
    for mode in single split; do
      f="$OUT/$mode-h$hogs-r$round.txt"
      HALYARD_RUNTIMES=$mode timeout 300 "$LAB" bench-access --clients 10 --seconds "$SECS" \
        --hogs "$hogs" >"$f" 2>&1 || true
      lost=$(sed -n 's/^leases lost (lease expired): \([0-9]*\);.*/\1/p' "$f")
      taken=$(sed -n 's/.*addresses taken during the run: \([0-9]*\);.*/\1/p' "$f")
      failed=$(sed -n 's/.*failed clients: \([0-9]*\)$/\1/p' "$f")
      append=$(awk '$1=="APPEND" {print $3}' "$f")
      fetch=$(awk '$1=="FETCH" {print $4}' "$f")
      printf '%-7s %5s %5s %12s %14s %10s %10s %8s\n' "$mode" "$hogs" "$round" "${lost:-error}" \
        "${taken:--}" "${append:--}" "${fetch:--}" "${failed:--}"
    done
  done
done
echo "outputs: $OUT"

#!/usr/bin/env bash
# Fuzzes Halyard's parsers with AFL++ on the stable toolchain (cargo afl).
#
#   scripts/fuzz.sh TARGET SECONDS      one target (see fuzz/src/lib.rs for the list)
#   scripts/fuzz.sh --all SECONDS       every target in turn, SECONDS each
#   scripts/fuzz.sh --list              the targets
#
# Installs cargo-afl (pinned) and builds AFL++ the first time. The instrumented build has its
# own target directory (~/.cache/halyard-fuzz-target) and links the RocksDB library the normal
# build made, when there is one, instead of compiling RocksDB's C++ again.
#
# Each run resumes the target's previous queue (~/.cache/halyard-fuzz/TARGET). Every crash is
# copied to fuzz/regressions/TARGET/ (commit it with the fix: tests/replay.rs runs it from
# then on) and makes the script fail; a hang is run again without the fuzzer and fails the
# script only if it still does not finish in 10 s. One table line per target, and a line in
# ~/.cache/halyard-fuzz/ledger.tsv (what was run, for CPU-hour totals).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
AFL_VERSION=0.18.2
STATE="${HALYARD_FUZZ_DIR:-$HOME/.cache/halyard-fuzz}"
export CARGO_TARGET_DIR="${HALYARD_FUZZ_TARGET:-$HOME/.cache/halyard-fuzz-target}"
MAIN_TARGET="${CARGO_TARGET_DIR_MAIN:-$HOME/.cache/halyard-target}"

targets() { sed -n 's/^    ("\([a-z0-9_]*\)", .*/\1/p' fuzz/src/lib.rs; }

case "${1:-}" in
  --list) targets; exit 0 ;;
  --all) TARGETS=$(targets) ;;
  ""|-h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  *) targets | grep -qx "$1" || { echo "no target $1 (scripts/fuzz.sh --list)" >&2; exit 2; }
     TARGETS=$1 ;;
esac
SECONDS_EACH="${2:?how many seconds}"

# cargo-afl, and AFL++ built for this toolchain (only its C part: instrumentation is
# rustc's own SanitizerCoverage, so no LLVM plugin has to match rustc's LLVM).
if [ "$(cargo afl --version 2>/dev/null | awk '{print $2}')" != "$AFL_VERSION" ]; then
  echo "installing: cargo-afl $AFL_VERSION" >&2
  cargo install --quiet --locked cargo-afl --version "$AFL_VERSION"
fi
if ! compgen -G "${XDG_DATA_HOME:-$HOME/.local/share}/afl.rs/rustc-*/afl.rs-$AFL_VERSION/afl/bin/afl-fuzz" >/dev/null; then
  echo "building AFL++ (cargo afl config --build)" >&2
  cargo afl config --build >/dev/null
fi

# RocksDB: the static library the normal build compiled, if it is there.
if [ -z "${ROCKSDB_LIB_DIR:-}" ]; then
  lib=$(ls -t "$MAIN_TARGET"/*/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -1 || true)
  if [ -n "$lib" ]; then
    export ROCKSDB_LIB_DIR=$(dirname "$lib") ROCKSDB_STATIC=1
  fi
fi
echo "building the instrumented targets (cargo afl build --release)" >&2
(cd fuzz/afl && cargo afl build --quiet --release --locked)
BIN="$CARGO_TARGET_DIR/release/halyard-fuzz-afl"

mkdir -p "$STATE"
# This machine's kernel settings are not AFL's business: no core_pattern or CPU governor
# checks, no UI, no affinity (CI shares its two cores with nothing else at this point).
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 \
  AFL_NO_AFFINITY=1 AFL_AUTORESUME=1 AFL_QUIET=1
failed=0
printf '%-14s %8s %12s %9s %7s %8s %6s\n' target seconds execs "execs/s" corpus crashes hangs
for t in $TARGETS; do
  out="$STATE/$t"
  mkdir -p "$out"
  stats="$out/default/fuzzer_stats"
  get() { [ -f "$stats" ] && awk -F' *: *' -v k="$1" '$1==k {print $2}' "$stats" || echo 0; }
  # A resumed run's statistics go on from the last one's.
  execs_before=$(get execs_done)
  run_before=$(get run_time)
  # Fresh seeds join a resumed run through the queue of a previous one.
  cargo afl fuzz -i "$ROOT/fuzz/corpus/$t" -o "$out" -V "$SECONDS_EACH" -t 2000 \
    -- "$BIN" "$t" >"$out/afl.log" 2>&1 || {
    echo "afl-fuzz failed on $t:" >&2
    tail -20 "$out/afl.log" >&2
    failed=1
    continue
  }
  crashes=0
  for c in "$out"/default/crashes/id:*; do
    [ -e "$c" ] || continue
    crashes=$((crashes + 1))
    mkdir -p "$ROOT/fuzz/regressions/$t"
    name="crash-$(sha256sum "$c" | cut -c1-16)"
    cp "$c" "$ROOT/fuzz/regressions/$t/$name"
    echo "CRASH in $t: fuzz/regressions/$t/$name" >&2
    "$BIN" "$t" <"$c" 2>&1 | tail -5 >&2 || true
    failed=1
  done
  hangs=0
  for h in "$out"/default/hangs/id:*; do
    [ -e "$h" ] || continue
    if ! timeout 10 "$BIN" "$t" <"$h" >/dev/null 2>&1; then
      hangs=$((hangs + 1))
      mkdir -p "$ROOT/fuzz/regressions/$t"
      cp "$h" "$ROOT/fuzz/regressions/$t/hang-$(sha256sum "$h" | cut -c1-16)"
      echo "HANG in $t (still running after 10 s without the fuzzer)" >&2
      failed=1
    fi
  done
  execs=$(( $(get execs_done) - execs_before ))
  run=$(( $(get run_time) - run_before ))
  [ "$run" -gt 0 ] || run=$(get run_time)
  [ "$execs" -ge 0 ] || execs=$(get execs_done)
  corpus=$(get corpus_count)
  rate=$(awk -v e="$execs" -v s="$run" 'BEGIN { printf "%.0f", (s > 0 ? e / s : 0) }')
  printf '%-14s %8s %12s %9s %7s %8s %6s\n' "$t" "$SECONDS_EACH" "$execs" "$rate" "$corpus" "$crashes" "$hangs"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$t" "$SECONDS_EACH" "$execs" "$crashes" "$hangs" \
    >>"$STATE/ledger.tsv"
  # The crashes and hangs are reported and kept; the next run starts clean of them.
  rm -f "$out"/default/crashes/id:* "$out"/default/hangs/id:*
done
exit $failed

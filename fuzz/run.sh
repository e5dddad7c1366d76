#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) each, one after the other, with debug
# assertions (overflow checks) on and new inputs collected in fuzz/work/<target> (seeded
# from the committed corpus), then prints executions and coverage. cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP=1 allows
# them on the stable toolchain. Install: cargo install cargo-fuzz --locked.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-600}
export RUSTC_BOOTSTRAP=1
for t in ${TARGETS:-framing avp_walk ccr_roundtrip}; do
  mkdir -p "work/$t"
  cargo fuzz run -O -a "$t" "work/$t" "corpus/$t" -- -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
    > "work/$t.log" 2>&1 || { echo "$t: FAILED, see fuzz/work/$t.log"; exit 1; }
  echo "$t: $(grep -E '^stat::number_of_executed_units' "work/$t.log" | awk '{print $2}') executions," \
       "$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "work/$t.log" | tail -1)," \
       "corpus $(ls "work/$t" | wc -l) new inputs"
done

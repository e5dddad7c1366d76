#!/usr/bin/env bash
# Instruction counts of the hot codec functions, per call, under callgrind:
# each workload runs at N and 2N iterations and the difference is divided by N, so
# process start-up and set-up cancel out. Needs valgrind. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-2000}
cargo build --release -q -p gyro-bench --bin icount
bin=target/release/icount
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 >/dev/null |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
echo "| workload | instructions per call |"
echo "| --- | --- |"
for w in walk decode decode_python encode cdr; do
  a=$(count "$w" "$N"); b=$(count "$w" $((2 * N)))
  echo "| $w | $(( (b - a) / N )) |"
done

# The engine path for one CCR-U with one MSCC (decode, single-shard engine, CCA, CDR
# line), 1,000,000 subscribers and 100,000 open sessions; only `engine_path` is counted
# (the CCR-I that open the sessions are in the counts of both runs and cancel out).
cargo build --release -q -p gyro-bench --bin ipath
path() {
  valgrind --tool=callgrind --toggle-collect='gyro_bench::engine_path' --callgrind-out-file=/dev/null \
    target/release/ipath 1000000 100000 "$1" 2>&1 >/dev/null | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
a=$(path "$N"); b=$(path $((2 * N)))
echo "| path (CCR-U: decode, engine, CCA, CDR) | $(( (b - a) / N )) |"

#!/usr/bin/env bash
# Shipper throughput: a CDR log of about 1M records written by `gyro serve` under
# `gyro-loadgen`, then `gyro ship --once` delivering all of it to `gyro billing-sink` on
# loopback, RUNS times (default 3) from an empty checkpoint and a fresh receiver; prints
# CDRs/s per run and the median.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SESSIONS=${SESSIONS:-300000}
cargo build --release -q -p gyro-shards -p gyro-loadgen
bin=target/release
work=$(mktemp -d)
trap 'pkill -TERM -f "$work" 2>/dev/null || true; sleep 0.5; rm -rf "$work"' EXIT
"$bin/gyro" serve --listen 127.0.0.1:39401 --admin 127.0.0.1:39402 --data-dir "$work/data" 2>/dev/null &
serve=$!
for _ in $(seq 1 100); do (echo > /dev/tcp/127.0.0.1/39401) 2>/dev/null && break; sleep 0.05; done
"$bin/gyro-loadgen" run --target 127.0.0.1:39401 --sessions "$SESSIONS" --connections 2 --window 64 --quiet >/dev/null
kill -TERM $serve; wait $serve || true
records=$("$bin/gyro" cdr verify "$work/data/shard-0" | sed -n 's/.*next sequence \([0-9]*\).*/\1/p')
rates=()
for i in $(seq 1 "$RUNS"); do
  "$bin/gyro" billing-sink --listen 127.0.0.1:39403 --out "$work/billing-$i.ndjson" 2>/dev/null >/dev/null &
  sink=$!
  for _ in $(seq 1 100); do (echo > /dev/tcp/127.0.0.1/39403) 2>/dev/null && break; sleep 0.05; done
  start=$(date +%s.%N)
  "$bin/gyro" ship --once --progress 0 --data-dir "$work/data" --checkpoint-dir "$work/ship-$i" \
    --to http://127.0.0.1:39403/cdrs 2>/dev/null
  end=$(date +%s.%N)
  kill -TERM $sink; wait $sink || true
  got=$(wc -l < "$work/billing-$i.ndjson")
  [ "$got" -eq "$records" ] || { echo "run $i: billing has $got of $records records" >&2; exit 1; }
  rates+=("$(python3 -c "print(round($records / ($end - $start)))")")
done
median=$(printf '%s\n' "${rates[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "| records | runs (CDRs/s) | median CDRs/s |"
echo "| --- | --- | --- |"
echo "| $records | ${rates[*]} | $median |"

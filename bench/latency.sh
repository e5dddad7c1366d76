#!/usr/bin/env bash
# Open-loop latency, in two parts (release build; server on CPU 0, generator on CPU 1).
#
# 1. The generator's self-check: `gyro-loadgen run --rate R` against `gyro-loadgen
#    sink` at 20k, 100k and 500k CCR/s, RUNS times each (median): p50, p99 and the
#    generator's own schedule lag (how late it sent). The sink answers in microseconds,
#    so what shows here is the generator's and the loopback's own error.
# 2. gyro's latency curve: `gyro-loadgen sweep` at 10%, 25%, 50%, 75% and 90% of the
#    closed-loop maximum against `gyro serve` with one shard and two (two shards run on
#    CPUs 0 and 1, so one of them shares its core with the generator), durability
#    `none` and `tick`, and the sink's curve at the same offered rates beside each.
#    One SVG per configuration (p50/p99/p99.9 against the offered rate) in $OUT.
#
# Prints Markdown tables.
#
#   bench/latency.sh                       # defaults below
#   RUNS=3 STEP=5 WINDOW=256 CONNECTIONS=2 CONFIGS="none tick none-2 tick-2" OUT=dir bench/latency.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
STEP=${STEP:-5}
CONNECTIONS=${CONNECTIONS:-2}
WINDOW=${WINDOW:-256}
SUBSCRIBERS=${SUBSCRIBERS:-1000000}
CONFIGS=${CONFIGS:-none tick none-2 tick-2}
SELF_RATES=${SELF_RATES:-20000 100000 500000}
OUT=${OUT:-target/latency}
cargo build --release -q -p gyro-shards -p gyro-loadgen
bin=target/release
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'pkill -TERM -f "$work" 2>/dev/null || true; kill $(jobs -p) 2>/dev/null || true; sleep 1; rm -rf "$work"' EXIT
wait_port() {
  for _ in $(seq 1 400); do
    (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2
  return 1
}
field() { python3 -c "import json,sys; r=json.load(open('$1')); print($2)"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

sink_port=39500
taskset -c 0 "$bin/gyro-loadgen" sink --listen "127.0.0.1:$sink_port" 2>/dev/null &
wait_port $sink_port

# Part 1: the generator against the sink.
echo "### The generator against the sink (median of $RUNS runs of ${STEP} s)"
echo
echo "| offered CCR/s | answered CCR/s | p50 us | p99 us | p99.9 us | schedule lag p50 us | lag p99 us | lag max us | held by the window |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for rate in $SELF_RATES; do
  declare -A v=()
  for i in $(seq 1 "$RUNS"); do
    report="$work/self-$rate-$i.json"
    taskset -c 1 "$bin/gyro-loadgen" run --target "127.0.0.1:$sink_port" --destination-realm sink \
      --connections "$CONNECTIONS" --window "$WINDOW" --rate "$rate" --duration "$STEP" \
      --quiet --report "$report" >/dev/null || true
    v[ans]+="$(field "$report" "round(r['ccr_per_s'])") "
    v[p50]+="$(field "$report" "r['latency_us']['p50']") "
    v[p99]+="$(field "$report" "r['latency_us']['p99']") "
    v[p999]+="$(field "$report" "r['latency_us']['p999']") "
    v[l50]+="$(field "$report" "r['schedule_lag_us']['p50']") "
    v[l99]+="$(field "$report" "r['schedule_lag_us']['p99']") "
    v[lmax]+="$(field "$report" "r['schedule_lag_us']['max']") "
    v[held]+="$(field "$report" "r['schedule_lag_us']['held_by_window']") "
  done
  echo "| $rate | $(echo ${v[ans]} | median) | $(echo ${v[p50]} | median) | $(echo ${v[p99]} | median) | $(echo ${v[p999]} | median) | $(echo ${v[l50]} | median) | $(echo ${v[l99]} | median) | $(echo ${v[lmax]} | median) | $(echo ${v[held]} | median) |"
  unset v
done
echo

# Part 2: gyro's latency curve beside the sink's.
"$bin/gyro-loadgen" dataset --subscribers "$SUBSCRIBERS" --companies 10000 --out "$work/dataset.ndjson" >/dev/null
port=39600
for config in $CONFIGS; do
  port=$((port + 2))
  durability=${config%-2}
  shards=1
  [ "$durability" != "$config" ] && shards=2
  "$bin/gyro" serve --listen "127.0.0.1:$port" --admin "127.0.0.1:$((port + 1))" \
    --dataset "$work/dataset.ndjson" --data-dir "$work/data-$config" \
    --shards "$shards" --durability "$durability" 2>"$work/serve-$config.log" &
  pid=$!
  wait_port $port
  report="$work/sweep-$config.json"
  taskset -c 1 "$bin/gyro-loadgen" sweep --target "127.0.0.1:$port" --compare "127.0.0.1:$sink_port" \
    --dataset "$work/dataset.ndjson" --connections "$CONNECTIONS" --window "$WINDOW" \
    --rates 10%,25%,50%,75%,90% --step "$STEP" --report "$report" \
    --plot "$OUT/latency-$config.svg" >"$work/sweep-$config.txt" || true
  kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true
  rm -rf "$work/data-$config"
  name="1 shard"; [ "$shards" = 2 ] && name="2 shards (one shares CPU 1 with the generator)"
  echo "### gyro serve, $name, durability $durability"
  echo
  echo "closed-loop maximum $(field "$report" "round(r['target']['max_ccr_per_s'])") CCR/s; plot: \`$OUT/latency-$config.svg\`"
  echo
  echo "| share of max | offered CCR/s | gyro p50 us | gyro p99 us | gyro p99.9 us | lag p99 us | sink p50 us | sink p99 us | sink p99.9 us | check failures, timeouts |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  python3 - "$report" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
t, c = r["target"]["points"], (r.get("compare") or {}).get("points") or []
shares = ["10%", "25%", "50%", "75%", "90%"]
for i, p in enumerate(t):
    s = c[i] if i < len(c) else None
    sink = lambda k: s["latency_us"][k] if s else "-"
    print(f"| {shares[i] if i < len(shares) else '-'} | {p['offered']:.0f} | {p['latency_us']['p50']} | {p['latency_us']['p99']} | "
          f"{p['latency_us']['p999']} | {p['schedule_lag_us']['p99']} | {sink('p50')} | {sink('p99')} | {sink('p999')} | "
          f"{p['check_failures'] + p['timeouts']} |")
EOF
  echo
done

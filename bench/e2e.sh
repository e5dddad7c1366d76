#!/usr/bin/env bash
# End-to-end throughput and latency: gyro-loadgen against `gyro serve` (durability none
# and tick) and, in the same run, against `gyro-loadgen sink` (a server that only
# answers, same framing and window): the loopback ceiling each gyro figure is read
# against; and, when Erlang/OTP is installed, against OTP's diameter as a stub Gy server
# (shards/tests/otp/gyro_gy.erl), another Gy server driven by the same generator. gyro
# serves with one shard (CPU 0) and with two (`none-2`, `tick-2`: CPUs 0 and 1); the
# generator runs on CPU 1 throughout, so with two shards it shares a core with one of
# them. Each configuration runs RUNS times (default 5) and the median is reported.
# Prints a Markdown table.
#
#   bench/e2e.sh                 # defaults: 2 connections, window 64, 5 s per run
#   RUNS=3 SECONDS_PER_RUN=3 CONNECTIONS=2 WINDOW=128 bench/e2e.sh
#   GYRO=/path/to/other/gyro bench/e2e.sh   # another build of gyro (before and after a change)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
SECS=${SECONDS_PER_RUN:-5}
CONNECTIONS=${CONNECTIONS:-2}
WINDOW=${WINDOW:-64}
SUBSCRIBERS=${SUBSCRIBERS:-1000000}
cargo build --release -q -p gyro-shards -p gyro-loadgen
bin=target/release
gyro=${GYRO:-$bin/gyro}
work=$(mktemp -d)
trap 'pkill -TERM -f "$work" 2>/dev/null || true; sleep 1; rm -rf "$work"' EXIT
"$bin/gyro-loadgen" dataset --subscribers "$SUBSCRIBERS" --companies 10000 --out "$work/dataset.ndjson" >/dev/null

configs="${CONFIGS:-sink none tick none-2 tick-2}"
if [ -z "${CONFIGS:-}" ] && command -v erl >/dev/null && command -v diameterc >/dev/null; then
  otp="$work/otp"; mkdir -p "$otp"
  dict=$(erl -noshell -eval 'io:format("~s",[code:lib_dir(diameter)]),halt().')/examples/dict
  for n in rfc4005_nas rfc4006_cc; do
    (cd "$otp" && diameterc -i . -o . --inherits common/diameter_gen_base_rfc6733 "$dict/$n.dia" >/dev/null && erlc -o . "$n.erl")
  done
  erlc -o "$otp" shards/tests/otp/gyro_gy.erl
  configs="$configs otp"
fi

port=39000
run_load() { # target, report file, destination realm
  taskset -c 1 "$bin/gyro-loadgen" run --target "$1" --dataset "$work/dataset.ndjson" \
    --destination-realm "$3" --connections "$CONNECTIONS" --window "$WINDOW" \
    --duration "$SECS" --quiet --report "$2" >/dev/null || true
}
field() { # report, jq-like path (python)
  python3 -c "import json,sys; r=json.load(open('$1')); print($2)"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A rate p50 p99 fails
for config in $configs; do
  for i in $(seq 1 "$RUNS"); do
    port=$((port + 1))
    realm=gyro.local
    if [ "$config" = sink ]; then
      taskset -c 0 "$bin/gyro-loadgen" sink --listen "127.0.0.1:$port" 2>/dev/null &
    elif [ "$config" = otp ]; then
      realm=otp.gyro.test
      taskset -c 0 erl -noshell -pa "$otp" -run gyro_gy server "$port" lenient >/dev/null 2>&1 &
    else
      runtime=epoll
      case $config in *@*) runtime=${config#*@} ;; esac
      base=${config%@*}
      durability=${base%-2}
      shards=1
      [ "$durability" != "$base" ] && shards=2
      "$gyro" serve --listen "127.0.0.1:$port" --admin "127.0.0.1:$((port + 1000))" \
        --dataset "$work/dataset.ndjson" --data-dir "$work/data-$config-$i" \
        --shards "$shards" --durability "$durability" --runtime "$runtime" \
        2>"$work/serve-$config-$i.log" &
    fi
    pid=$!
    for _ in $(seq 1 200); do
      (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break
      sleep 0.05
    done
    report="$work/$config-$i.json"
    run_load "127.0.0.1:$port" "$report" "$realm"
    kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true
    rm -rf "$work/data-$config-$i"
    rate[$config]+="$(field "$report" "round(r['ccr_per_s'])") "
    p50[$config]+="$(field "$report" "r['latency_us']['p50']") "
    p99[$config]+="$(field "$report" "r['latency_us']['p99']") "
    fails[$config]+="$(field "$report" "r['check_failures'] + r['timeouts']") "
  done
done

echo "| server | CCR/s (median of $RUNS) | runs | p50 us | p99 us | of ceiling | check failures |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
ceiling=$(echo ${rate[sink]} | tr ' ' '\n' | median)
for config in $configs; do
  r=$(echo ${rate[$config]} | tr ' ' '\n' | median)
  a=$(echo ${p50[$config]} | tr ' ' '\n' | median)
  b=$(echo ${p99[$config]} | tr ' ' '\n' | median)
  f=$(echo ${fails[$config]} | tr ' ' '\n' | awk '{s+=$1} END {print s}')
  case $config in
    sink) name="gyro-loadgen sink (ceiling)" ;;
    otp) name="Erlang/OTP diameter stub Gy server" ;;
    *-2@*) name="gyro serve, 2 shards, durability ${config%-2@*}, ${config#*@} runtime" ;;
    *-2) name="gyro serve, 2 shards, durability ${config%-2}" ;;
    *) name="gyro serve, 1 shard, durability $config" ;;
  esac
  pct=$(python3 -c "print(f'{100*$r/$ceiling:.0f}%')")
  echo "| $name | $r | ${rate[$config]}| $a | $b | $pct | $f |"
done

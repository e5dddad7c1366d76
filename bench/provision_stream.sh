#!/usr/bin/env bash
# Provisioning at run time, streamed: `gyro serve` (release build, SHARDS shards,
# durability none) started on a small dataset takes LINES subscriber lines (default one
# million, each a new subscriber) in one `POST /provisioning` body, streamed by curl
# from a file. Prints the body's size, the time to apply it, the lines applied and
# rejected, and the server's memory: anonymous resident memory (RssAnon: the engine's
# tables, buffers) before and after, the log's mapped pages (RssFile) after, and the
# peak of both (VmHWM). The body is applied in batches as it comes, never held whole:
# the growth is the subscribers' place in the engine, not the body, as the baseline
# (a server started with the same subscribers in its dataset) shows.
#
#   bench/provision_stream.sh
#   LINES=200000 SHARDS=2 bench/provision_stream.sh
set -euo pipefail
cd "$(dirname "$0")/.."
LINES=${LINES:-1000000}
SHARDS=${SHARDS:-1}
cargo build --release -q -p gyro-shards
gyro=target/release/gyro
work=$(mktemp -d)
trap 'kill -TERM $pid 2>/dev/null || true; sleep 1; rm -rf "$work"' EXIT
cat > "$work/dataset.ndjson" <<'NDJSON'
{"type":"tariff","rating_group":10,"unit":"octets","unit_size":1048576,"price":2000}
{"type":"company","id":"acme","balance":1000000000}
NDJSON
awk -v n="$LINES" 'BEGIN { for (i = 0; i < n; i++) printf "{\"type\":\"subscriber\",\"msisdn\":\"49%011d\",\"imsi\":\"26201%010d\",\"company\":\"acme\"}\n", i, i }' > "$work/body.ndjson"
GYRO_ADMIN_TOKEN=t "$gyro" serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --shards "$SHARDS" \
  --data-dir "$work/data" --dataset "$work/dataset.ndjson" 2> "$work/serve.log" &
pid=$!
for _ in $(seq 100); do grep -q "operations on http://" "$work/serve.log" && break; sleep 0.1; done
admin=$(grep -o "operations on http://[0-9.:]*" "$work/serve.log" | head -1 | sed 's/operations on http:\/\///')
rss() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$pid/status"; }
before=$(rss RssAnon)
t0=$(date +%s.%N)
answer=$(curl -sS -X POST -H "Authorization: Bearer t" -H "Content-Type: application/x-ndjson" \
  -T "$work/body.ndjson" "http://$admin/provisioning")
t1=$(date +%s.%N)
after=$(rss RssAnon)
peak=$(rss VmHWM)
file=$(rss RssFile)
bytes=$(stat -c %s "$work/body.ndjson")
applied=$(echo "$answer" | grep -o '"applied":[0-9]*' | cut -d: -f2)
rejected=$(echo "$answer" | { grep -o '"line":' || true; } | wc -l)
kill -TERM $pid; wait $pid 2>/dev/null || true
# The baseline: the same subscribers in the dataset a server starts from.
cat "$work/dataset.ndjson" "$work/body.ndjson" > "$work/whole.ndjson"
GYRO_ADMIN_TOKEN=t "$gyro" serve --listen 127.0.0.1:0 --admin 127.0.0.1:0 --shards "$SHARDS" \
  --data-dir "$work/data2" --dataset "$work/whole.ndjson" 2> "$work/serve2.log" &
pid=$!
for _ in $(seq 600); do grep -q "operations on http://" "$work/serve2.log" && break; sleep 0.1; done
sleep 1
baseline=$(rss RssAnon)
awk -v l="$LINES" -v s="$SHARDS" -v b="$bytes" -v t0="$t0" -v t1="$t1" -v a="$applied" -v r="$rejected" \
    -v rb="$before" -v ra="$after" -v rp="$peak" -v rf="$file" -v bl="$baseline" 'BEGIN {
  printf "| lines | shards | body MiB | seconds | lines/s | applied | rejected | anon MiB before | anon MiB after | log pages MiB | peak RSS MiB | anon MiB, same subscribers from the dataset |\n"
  printf "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
  printf "| %d | %d | %.1f | %.2f | %.0f | %d | %d | %.1f | %.1f | %.1f | %.1f | %.1f |\n", l, s, b / 1048576, t1 - t0, l / (t1 - t0), a, r, rb / 1024, ra / 1024, rf / 1024, rp / 1024, bl / 1024
}'

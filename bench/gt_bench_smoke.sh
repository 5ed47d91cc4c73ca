#!/bin/sh
# bench_smoke (CTest label bench_smoke): starts gt_bench_empty on a free
# loopback port and runs gt_bench briefly in both modes against it.  It
# checks only that each run prints its result line with messages and no
# errors -- never a rate: timings vary too much on shared machines.
# Usage: gt_bench_smoke.sh DIR_WITH_BINARIES
set -eu
dir=$1
log=$(mktemp)
"$dir/gt_bench_empty" --listen 127.0.0.1:0 --threads 2 >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -f "$log"' EXIT
port=
# Up to 30 s: a slow or loaded machine, or a sanitizer build.
i=0
while [ "$i" -lt 120 ] && kill -0 "$pid" 2>/dev/null; do
  port=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$log")
  [ -n "$port" ] && break
  sleep 0.25
  i=$((i + 1))
done
[ -n "$port" ] || { echo "gt_bench_empty did not start"; cat "$log"; exit 1; }
for args in "--mode send --batch 1" "--mode send --batch 8" "--mode recv"; do
  # shellcheck disable=SC2086
  out=$("$dir/gt_bench" --target "127.0.0.1:$port" --conns 2 --inflight 2 \
          --duration 1 --warmup 0.2 $args)
  echo "$out"
  echo "$out" | grep -q ' error_count=0 ' || { echo "FAIL: errors ($args)"; exit 1; }
  echo "$out" | grep -q ' ok=0 ' && { echo "FAIL: no message ($args)"; exit 1; }
done
echo "bench_smoke: ok"

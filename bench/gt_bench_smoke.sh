#!/bin/sh
# bench_smoke (CTest label bench_smoke): starts gt_bench_empty on a free
# loopback port and runs gt_bench briefly in both modes against it, then
# sends against gt_bench_empty --sync-dir (the durable ceiling of
# scripts/bench) and checks that the bodies reached its file.  It checks
# only that each run prints its result line with messages and no errors
# -- never a rate: timings vary too much on shared machines.
# Usage: gt_bench_smoke.sh DIR_WITH_BINARIES
set -eu
dir=$1
tmp=$(mktemp -d)
pid=
trap 'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi; rm -rf "$tmp"' EXIT

start() { # gt_bench_empty args...: sets pid and port
  : >"$tmp/log"
  "$dir/gt_bench_empty" --listen 127.0.0.1:0 --threads 2 "$@" >"$tmp/log" 2>&1 &
  pid=$!
  port=
  # Up to 30 s: a slow or loaded machine, or a sanitizer build.
  i=0
  while [ "$i" -lt 120 ] && kill -0 "$pid" 2>/dev/null; do
    port=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$tmp/log")
    [ -n "$port" ] && break
    sleep 0.25
    i=$((i + 1))
  done
  [ -n "$port" ] || { echo "gt_bench_empty $* did not start"; cat "$tmp/log"; exit 1; }
}

stop() {
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
}

run() { # gt_bench args...
  out=$("$dir/gt_bench" --target "127.0.0.1:$port" --conns 2 --inflight 2 \
          --duration 1 --warmup 0.2 "$@")
  echo "$out"
  echo "$out" | grep -q ' error_count=0 ' || { echo "FAIL: errors ($*)"; exit 1; }
  if echo "$out" | grep -q ' ok=0 '; then echo "FAIL: no message ($*)"; exit 1; fi
}

start
run --mode send --batch 1
run --mode send --batch 8
run --mode recv
stop

mkdir "$tmp/sync"
start --sync-dir "$tmp/sync"
run --mode send --batch 1
run --mode send --batch 8
stop
# gt_bench's bodies are letters a-z after their 8-byte timestamp: in the
# file, which the server filled with zeros at start.
[ "$(tr -cd a-z <"$tmp/sync/gbe-sync.data" | head -c 1024 | wc -c)" -eq 1024 ] ||
  { echo "FAIL: --sync-dir wrote no body to $tmp/sync/gbe-sync.data"; exit 1; }
echo "bench_smoke: ok"

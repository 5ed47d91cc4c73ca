#!/bin/sh
# bench_smoke (CTest label bench_smoke): starts gt_bench_empty on a free
# loopback port and runs gt_bench briefly in both modes against it, then
# sends against gt_bench_empty --sync-dir (the durable ceiling of
# scripts/bench) and checks that the bodies reached its file, then through
# a null store cluster of gt_bench_empty --forward processes (the
# replication ceiling) and checks that the bodies reached the leader's and
# the followers' files, that one follower down is tolerated with --acks 1
# and fails the sends with --acks 2.  It checks
# only that each run prints its result line with messages and no errors
# -- never a rate: timings vary too much on shared machines.
# Usage: gt_bench_smoke.sh DIR_WITH_BINARIES
set -eu
dir=$1
tmp=$(mktemp -d)
pid=
all=
trap 'for p in $all; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$tmp"' EXIT

start() { # gt_bench_empty args...: sets pid and port
  : >"$tmp/log"
  "$dir/gt_bench_empty" --listen 127.0.0.1:0 --threads 2 "$@" >"$tmp/log" 2>&1 &
  pid=$!
  all="$all $pid"
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

stop() { # [pid]: the last one started by default
  kill "${1:-$pid}"
  wait "${1:-$pid}" 2>/dev/null || true
}

letters() { # file: gt_bench's bodies are letters a-z after their 8-byte
  # timestamp; the server filled the file with zeros at start
  [ "$(tr -cd a-z <"$1" | head -c 1024 | wc -c)" -eq 1024 ]
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
letters "$tmp/sync/gbe-sync.data" ||
  { echo "FAIL: --sync-dir wrote no body to $tmp/sync/gbe-sync.data"; exit 1; }

# The null cluster: two followers, a leader answering after one of them,
# a front (4 calls in flight, 2 forwards at most: the rest are gathered).
mkdir "$tmp/f1" "$tmp/f2" "$tmp/l"
start --write-dir "$tmp/f1"; f1=$pid; f1port=$port
start --write-dir "$tmp/f2"; f2=$pid; f2port=$port
start --write-dir "$tmp/l" --forward "127.0.0.1:$f1port,127.0.0.1:$f2port" --acks 1
lport=$port
start --forward "127.0.0.1:$lport"
run --mode send --batch 1
run --mode send --batch 8
for f in l f1 f2; do
  letters "$tmp/$f/gbe-write.data" || { echo "FAIL: the null cluster's $f wrote no body"; exit 1; }
done
# One follower down: --acks 1 still answers every send.
stop "$f2"
run --mode send --batch 8
# ... and a leader that wants both fails them (UNAVAILABLE).
start --forward "127.0.0.1:$f1port,127.0.0.1:$f2port" --acks 2
start --forward "127.0.0.1:$port"
out=$("$dir/gt_bench" --target "127.0.0.1:$port" --conns 1 --inflight 1 \
        --warmup 0 --duration 5 --mode send)
echo "$out"
echo "$out" | grep -q ' total_ok=0 ' && ! echo "$out" | grep -q ' error_count=0 ' ||
  { echo "FAIL: --acks 2 with one follower down answered OK"; exit 1; }
echo "bench_smoke: ok"

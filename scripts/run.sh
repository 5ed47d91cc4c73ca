#!/usr/bin/env bash
# One command: install dependencies, build, and start gantry in the
# foreground with the embedded store and config/gantry.yaml (gRPC 8081,
# HTTP 5557, AMQP 5672).  Extra arguments go to gantry, e.g. --log-level debug.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target gantry
exec build/gantry --config config/gantry.yaml "$@"

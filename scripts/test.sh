#!/usr/bin/env bash
# One command: install what the tests need, build with -Werror, run the
# whole suite (unit, contract, integration, slow), then build again with
# AddressSanitizer + UndefinedBehaviorSanitizer and run the unit and
# integration suites on that build.  GANTRY_TEST_SANITIZE=0 skips the
# second pass.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)
scripts/install-deps.sh

echo "== build (Release, -Werror)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DGANTRY_WERROR=ON >/dev/null
cmake --build build -j"$jobs"
echo "== tests (Release)"
ctest --test-dir build --output-on-failure -j"$jobs"

if [ "${GANTRY_TEST_SANITIZE:-1}" != 0 ]; then
  echo "== build (ASan + UBSan)"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DGANTRY_WERROR=ON \
        -DGANTRY_SANITIZE=ON >/dev/null
  cmake --build build-asan -j"$jobs"
  echo "== tests (ASan + UBSan)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
  UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs" -L 'unit|integration'
fi

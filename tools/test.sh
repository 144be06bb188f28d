#!/usr/bin/env bash
# The README's test command: install dependencies, build, run every test
# (ctest labels unit, bpf, e2e), then build the unit tests with ASan + UBSan
# and run them again, run every fuzzer for a minute (clang, libFuzzer), and
# run the threaded unit tests (label tsan) under ThreadSanitizer. Tests that
# need root/BPF/netns skip with a reason when run unprivileged; on CI (root)
# they all run. docs/RELIABILITY.md describes the fuzz and TSan passes.
#
#   tools/test.sh                  everything
#   KPX_TEST_SANITIZE=0 tools/test.sh    skip the ASan/UBSan pass
#   KPX_TEST_FUZZ=0 tools/test.sh        skip the fuzzers (KPX_FUZZ_SECONDS=60 each)
#   KPX_TEST_TSAN=0 tools/test.sh        skip the ThreadSanitizer pass
#   KPX_TEST_LABELS=unit tools/test.sh   only tests with that ctest label (regex)
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/setup.sh

jobs=$(nproc)
build=${KPX_BUILD_DIR:-build}
echo "== build ($build)"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j "$jobs"

echo "== tests"
labels=${KPX_TEST_LABELS:-}
# e2e tests share the netns lab, so tests run one at a time; each has a timeout.
(cd "$build" && ctest --output-on-failure --timeout 600 ${labels:+-L "$labels"})

if [[ ${KPX_TEST_SANITIZE:-1} != 0 ]]; then
  echo "== unit tests under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan)"
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DKPX_SANITIZE=ON >/dev/null
  cmake --build build-asan -j "$jobs"
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --output-on-failure --timeout 600 -L unit)
fi

if [[ ${KPX_TEST_FUZZ:-1} != 0 ]]; then
  seconds=${KPX_FUZZ_SECONDS:-60}
  echo "== fuzzers, ${seconds}s each (build-fuzz: clang, libFuzzer + ASan + UBSan)"
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DKPX_FUZZ=ON >/dev/null
  cmake --build build-fuzz -j "$jobs" --target kpx_fuzzers
  tests/fuzz/run.sh build-fuzz "$seconds" "$jobs"
fi

if [[ ${KPX_TEST_TSAN:-1} != 0 ]]; then
  echo "== threaded unit tests under ThreadSanitizer (build-tsan, ctest label tsan)"
  cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKPX_SANITIZE_THREAD=ON \
    >/dev/null
  cmake --build build-tsan -j "$jobs" --target kpx_tsan_tests
  supp="$PWD/tests/tsan.supp"
  (cd build-tsan && TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$supp" \
    ctest --output-on-failure --timeout 600 -L tsan)
fi
echo "== all tests passed"

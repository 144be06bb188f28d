#!/usr/bin/env bash
# Quick-start demo: build kpx and render the example manifests into rules.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target kpxctl >/dev/null
echo "== kpxctl render -f config/examples --node-name a4-worker3"
build/tools/kpxctl render -f config/examples --node-name a4-worker3

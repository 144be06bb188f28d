#!/usr/bin/env bash
# Runs every libFuzzer target of a KPX_FUZZ build for SECONDS each, at most
# JOBS at a time, over its checked-in seeds (tests/fuzz/corpus/<name>, read
# only) plus a scratch corpus. Fails if any target crashes, hangs, leaks or
# breaks an invariant, printing the reproducer path and how to replay it.
#
#   tests/fuzz/run.sh BUILD_DIR [SECONDS] [JOBS]
set -euo pipefail
cd "$(dirname "$0")/../.."

build=${1:?usage: tests/fuzz/run.sh BUILD_DIR [SECONDS] [JOBS]}
seconds=${2:-60}
jobs=${3:-$(nproc)}
out="$build/fuzz-out"
rm -rf "$out"
mkdir -p "$out"

# Per target: the input size bound (frames up to an Ethernet MTU; requests
# and manifests up to 64 KiB, which covers every seed several times over).
declare -A max_len=([manifest_fuzz]=65536 [k8s_watch_fuzz]=65536 [admin_fuzz]=65536
                    [bpf_lb_fuzz]=1514)

run_one() {
  local name=$1 bin="$build/tests/fuzz/$1"
  mkdir -p "$out/$name/corpus" "$out/$name/artifacts"
  local dict=()
  [[ -f tests/fuzz/$name.dict ]] && dict=(-dict="tests/fuzz/$name.dict")
  # -timeout: one input running this long is a hang (yaml-cpp has had
  # infinite loops); generous because CI machines are shared and slow.
  "$bin" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2560 \
    -max_len="${max_len[$name]:-65536}" -print_final_stats=1 "${dict[@]}" \
    -artifact_prefix="$out/$name/artifacts/" \
    "$out/$name/corpus" "tests/fuzz/corpus/$name" >"$out/$name/log" 2>&1
}

names=()
for bin in "$build"/tests/fuzz/*_fuzz; do
  [[ -x $bin ]] && names+=("$(basename "$bin")")
done
((${#names[@]})) || { echo "no fuzz targets in $build/tests/fuzz" >&2; exit 1; }

declare -A pids=()
failed=0
for name in "${names[@]}"; do
  while (($(jobs -rp | wc -l) >= jobs)); do wait -n || true; done
  echo "fuzz: $name for ${seconds}s"
  run_one "$name" &
  pids[$name]=$!
done
for name in "${names[@]}"; do
  if wait "${pids[$name]}"; then
    stats=$(grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "$out/$name/log" |
            sed 's/stat:://' | tr '\n' ' ')
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$out/$name/log" | tail -1)
    echo "fuzz: $name ok: $stats$cov$(grep -E '^bpf_lb_fuzz: ' "$out/$name/log" | sed 's/^/; /')"
  else
    failed=1
    echo "fuzz: $name FAILED (log: $out/$name/log)" >&2
    grep -E 'ERROR|SUMMARY|invariant broken|returned|skipped' "$out/$name/log" | head -20 >&2 || true
    for a in "$out/$name/artifacts"/*; do
      [[ -e $a ]] || continue
      echo "fuzz: reproducer: $a" >&2
      echo "fuzz:   replay with: $build/tests/fuzz/$name $a" >&2
    done
  fi
done
exit $failed

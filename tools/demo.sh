#!/usr/bin/env bash
# Quick-start demo (root): builds kpx, brings up the netns lab (client, node,
# 4 flask pods from config/examples/flask.yaml), runs kpxd in the node and
# sends real requests to the ClusterIP 10.96.4.197:5000 from the client:
#   1. the spread over the 4 pods,
#   2. the EndpointSlice scaled down to 2 pods and back up: the spread follows,
#   3. one pod's server killed: requests keep succeeding, the spread moves to
#      the others; restarted: it is back.
# Everything it starts is stopped by PID and the lab torn down on exit, even on
# failure or Ctrl-C. Runs in well under 2 minutes.
#   KPX_DEMO_DATAPLANE=xdp tools/demo.sh   the same on the eBPF dataplane
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

[[ $(id -u) -eq 0 ]] || { echo "demo.sh: run as root (it builds network namespaces)" >&2; exit 1; }
bash tools/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)" --target kpxd kpxctl kpx-podserver >/dev/null

export KPX_LAB_PREFIX=${KPX_LAB_PREFIX:-kpx-}
VIP=10.96.4.197
URL=http://$VIP:5000/
WORK=$(mktemp -d /tmp/kpx-demo-XXXXXX)
MANIFESTS=$WORK/manifests
STATUS=$WORK/kpxd-status.json
KPXD_PID=""

cleanup() {
  set +e
  if [[ -n $KPXD_PID ]] && kill -0 "$KPXD_PID" 2>/dev/null; then
    kill -TERM "$KPXD_PID"
    for _ in $(seq 50); do kill -0 "$KPXD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$KPXD_PID" 2>/dev/null
  fi
  if [[ ${DATAPLANE:-uring} == xdp ]]; then
    "$REPO/build/tools/kpxd" --netns "${KPX_LAB_PREFIX}node" --cleanup --bpf-pin-dir "$PIN_DIR" \
      >/dev/null 2>&1
  fi
  tools/lab.sh down >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -t 1 ]]; then B=$'\033[1m' N=$'\033[0m'; else B="" N=""; fi
say() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
status_field() {
  local s; s=$(cat "$STATUS" 2>/dev/null) || return 0
  [[ $s =~ \"$1\":([a-z0-9]+) ]] && echo "${BASH_REMATCH[1]}"; return 0
}
# Waits (bounded) until kpxd has applied more than N source updates.
wait_updates() {
  for _ in $(seq 500); do
    [[ $(status_field updates) -gt $1 && $(status_field in_sync) == true ]] && return 0
    sleep 0.01
  done
  echo "demo.sh: kpxd did not apply the change within 5 s; its log:" >&2
  tail -20 "$WORK/kpxd.log" >&2; exit 1
}
# N requests from the client; prints how many each pod answered and failures.
spread() {
  local n=$1 ok=0 fail=0 out
  declare -A count=()
  for ((i = 0; i < n; i++)); do
    if out=$(ip netns exec "${KPX_LAB_PREFIX}client" curl -s --max-time 2 -H 'Connection: close' "$URL"); then
      count[$out]=$(( ${count[$out]:-0} + 1 )); ok=$((ok + 1))
    else
      fail=$((fail + 1))
    fi
  done
  for pod in $(printf '%s\n' "${!count[@]}" | sort); do
    printf '   %-5s %3d  %s\n' "$pod" "${count[$pod]}" "$(printf '#%.0s' $(seq "${count[$pod]}"))"
  done
  printf '   %d/%d requests succeeded, %d failed\n' "$ok" "$n" "$fail"
}
set_endpoints() { # write flask.yaml keeping only the first N endpoints, atomically
  python3 - "$REPO/config/examples/flask.yaml" "$1" > "$MANIFESTS/.flask.yaml.tmp" <<'PY'
import sys
src, keep = open(sys.argv[1]).read(), int(sys.argv[2])
head, _, eps = src.partition("endpoints:\n")
items = ["- addresses" + e for e in eps.split("- addresses")[1:]]
sys.stdout.write(head + "endpoints:\n" + "".join(items[:keep]))
PY
  mv "$MANIFESTS/.flask.yaml.tmp" "$MANIFESTS/flask.yaml"
}

say "lab: client, node, 4 pods (tools/lab.sh up)"
tools/lab.sh up
mkdir -p "$MANIFESTS"
cp config/examples/flask.yaml "$MANIFESTS/"

DATAPLANE=${KPX_DEMO_DATAPLANE:-uring}  # uring (io_uring proxy) or xdp (eBPF)
PIN_DIR=/sys/fs/bpf/kpx-demo-$$
say "kpxd in the node namespace ($DATAPLANE dataplane), watching $MANIFESTS"
"$REPO/build/tools/kpxd" --netns "${KPX_LAB_PREFIX}node" --manifest-dir "$MANIFESTS" \
  --hostname-override a4-worker3 --status-file "$STATUS" --dataplane "$DATAPLANE" \
  --bpf-pin-dir "$PIN_DIR" --cluster-cidr 10.244.0.0/16 \
  --admin-socket "$WORK/kpxd.sock" --state-dir "$WORK/state" \
  >"$WORK/kpxd.log" 2>&1 &
KPXD_PID=$!
wait_updates 0
build/tools/kpxctl render -f "$MANIFESTS" --node-name a4-worker3

say "40 requests to $URL from the client"
spread 40

say "EndpointSlice scaled down to 2 pods (flask.yaml rewritten)"
before=$(status_field updates); set_endpoints 2; wait_updates "$before"
spread 40

say "scaled back up to 4 pods"
before=$(status_field updates); set_endpoints 4; wait_updates "$before"
spread 40

if [[ $DATAPLANE == xdp ]]; then
  say "pod2's server killed: the eBPF path has no connect retry, so connections hashed to pod2 are refused until the health checks take it out (< 1 s)"
else
  say "pod2's server killed (tools/lab.sh pod-stop 2): kpxd retries another pod, health checks take it out of rotation"
fi
tools/lab.sh pod-stop 2
spread 40

say "kpxctl get backends default/flask-svc (health, per-backend connections, failed connects)"
build/tools/kpxctl --socket "$WORK/kpxd.sock" get backends default/flask-svc

say "pod2 restarted: back after 2 good probes"
tools/lab.sh pod-start 2
sleep 1.5
spread 40

say "kpxd log (last lines)"
tail -5 "$WORK/kpxd.log"
say "done: tearing down"

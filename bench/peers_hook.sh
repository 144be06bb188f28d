# bench/peers_hook.sh: plugs kpxd into ../shared/peers/peers.sh (modes `project`
# and `scale-project`). peers.sh sources this file as root in the root netns
# after building its lab; see ../shared/peers/project_hook.example.sh for the
# contract. kpxd runs in the node netns and is started with kpxb_spawn, so
# peers.sh stops it by PID (SIGTERM: kpxd drains and removes its VIPs).
#
#   KPX_BUILD       build directory holding tools/kpxd (default: ./build)
#   KPX_DATAPLANE   kpxd --dataplane value (default: uring)
#   KPX_KPXD_ARGS   extra kpxd flags
#   KPX_LAB_XDP     eBPF mode: 1 puts XDP (not only tc) on the lab's veths
#
# eBPF mode: every node interface of this lab is a pod-facing veth (the client
# netns plays a pod on the node), so they get the tc program only, as pod veths
# do on a real node (issue: XDP on uplinks, tc on pod veths). kpxd's default
# would put XDP on them (they carry IPv4 addresses here); XDP on a veth also
# strips GSO/TSO from its peer (veth_fix_features), and the pods then send
# MTU-sized segments: iperf3 fell to ~1 Gbit/s vs ~3 for direct.

KPX_BUILD=${KPX_BUILD:-$PWD/build}
KPX_STATUS="$KPXB_STATE_DIR/kpxd-status.json"

kpx_status_field() { # FIELD -> scalar value from kpxd's --status-file ("" if absent)
  local s
  s=$(cat "$KPX_STATUS" 2>/dev/null) || return 0
  [[ $s =~ \"$1\":([a-z0-9]+) ]] && echo "${BASH_REMATCH[1]}"
  return 0
}

# Waits until kpxd has loaded N files and is in sync (bounded: 600 s).
kpx_wait_files() { # N [MIN_UPDATES]
  local want=$1 min_updates=${2:-0} i
  for ((i = 0; i < 60000; i++)); do
    if [[ -f $KPX_STATUS && $(kpx_status_field files) == "$want" &&
          $(kpx_status_field in_sync) == true &&
          $(kpx_status_field updates) -ge $min_updates ]]; then
      return 0
    fi
    sleep 0.01
  done
  echo "kpx hook: kpxd did not reach $want files within 600 s" >&2
  return 1
}

project_start() {
  [[ -x $KPX_BUILD/tools/kpxd ]] || { echo "kpx hook: $KPX_BUILD/tools/kpxd not built" >&2; return 1; }
  rm -f "$KPX_STATUS"
  local ifaces=()
  if [[ ${KPX_DATAPLANE:-uring} != uring && ${KPX_LAB_XDP:-0} != 1 ]]; then
    ifaces=(--interfaces=, "--tc_interfaces=${KPXB_NODE_IFACES// /,}")
  fi
  # shellcheck disable=SC2086
  kpxb_spawn "$KPXB_NODE_NS" "$KPXB_OUT/logs/kpxd.log" \
    "$KPX_BUILD/tools/kpxd" --manifest-dir "$KPXB_MANIFESTS" --hostname-override node \
    --cluster-cidr "$KPXB_CLUSTER_CIDR" --dataplane "${KPX_DATAPLANE:-uring}" \
    --status-file "$KPX_STATUS" --admin-socket "$KPXB_STATE_DIR/kpxd.sock" \
    --state-dir "$KPXB_STATE_DIR/kpx-state" "${ifaces[@]}" ${KPX_KPXD_ARGS:-}
  local n; n=$(find "$KPXB_MANIFESTS" -maxdepth 1 -name '*.yaml' | wc -l)
  kpx_wait_files "$n"
}

# kpxd is stopped by PID by peers.sh right after this; it removes its own VIPs.
# Its counters are kept first: on the eBPF dataplane the XDP/tc verdicts show
# that the traffic took the BPF path (kpx-bench e2e checks them).
project_stop() {
  [[ -S $KPXB_STATE_DIR/kpxd.sock ]] || return 0
  "$KPX_BUILD/tools/kpxctl" --socket "$KPXB_STATE_DIR/kpxd.sock" stats -o json \
    >"$KPXB_OUT/logs/kpxd-stats.json" 2>&1 || true
}

project_scale_apply() { # DIR: make kpxd serve exactly these Services
  local src=$1 n
  n=$(find "$src" -maxdepth 1 -name '*.yaml' | wc -l)
  find "$KPXB_MANIFESTS" -maxdepth 1 -name '*.yaml' -delete
  cp "$src"/*.yaml "$KPXB_MANIFESTS"/
  kpx_wait_files "$n"
}

project_scale_change() { # DIR with the one rewritten Service file
  local before n
  before=$(kpx_status_field updates)
  n=$(kpx_status_field files)
  for f in "$1"/*.yaml; do
    # Write then rename, as a controller would: kpxd sees one complete file.
    cp "$f" "$KPXB_MANIFESTS/.$(basename "$f").tmp"
    mv "$KPXB_MANIFESTS/.$(basename "$f").tmp" "$KPXB_MANIFESTS/$(basename "$f")"
  done
  kpx_wait_files "$n" $((before + 1))
}

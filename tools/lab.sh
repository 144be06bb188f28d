#!/usr/bin/env bash
# The kpx test lab: a client, a node (where kpxd runs) and N pods, each its own
# network namespace, wired like a Calico node (per-pod /32 routes, link-local
# gateway). Used by the e2e tests, the demo and the benchmarks.
#
#  kpx-client                    kpx-node (router; kpxd runs here)          kpx-podI (I=1..N)
#  eth0 10.244.0.2/24 ---veth--- cli0 10.244.0.1/24
#                                lo   169.254.1.1/32 (pods' gateway)
#                                podI (no address, proxy_arp) ------veth--- eth0 <pod IP>/32
#                                route <pod IP>/32 dev podI src 10.244.0.1       default via 169.254.1.1
#  routes: 10.244.0.0/16, 10.96.0.0/12 via 10.244.0.1                        kpx-podserver --name podI
#                                                                              :5000 http :5001 echo :5002 sink
#  pod IPs: pod1 10.244.1.2  pod2 10.244.2.2  pod3 10.244.3.2  pod4 10.244.3.3  podI (I>4) 10.244.I.2
#
# Usage (root):
#   lab.sh up                    build the lab and start one kpx-podserver per pod
#   lab.sh down                  stop those servers (by recorded PID), delete the namespaces;
#                                idempotent, also after a partial or killed `up`
#   lab.sh status                namespaces, addresses, server PIDs
#   lab.sh check                 curl every pod from the client, exit 1 if one does not answer
#   lab.sh exec NS CMD...        run CMD in namespace NS (client, node, pod1, ... or kpx-NS)
#   lab.sh pod-stop I | pod-start I        stop / restart pod I's server
#   lab.sh pod-health I ok|fail            make pod I's /healthz answer 200 / 503
# Environment: KPX_LAB_PODS (4), KPX_PODSERVER (build/tools/podserver/kpx-podserver),
#   KPX_LAB_PREFIX (kpx-; another kpx*- prefix builds an independent lab with the same
#   addresses, e.g. for a test running next to a demo), KPX_LAB_STATE (/run/<prefix>lab).
set -euo pipefail

PREFIX=${KPX_LAB_PREFIX:-kpx-}
if [[ ! $PREFIX =~ ^kpx[a-z0-9]*-$ || $PREFIX == kpxb- ]]; then
  echo "lab.sh: KPX_LAB_PREFIX must look like kpx[a-z0-9]*- and not be kpxb- (the peers' lab)" >&2
  exit 2
fi
STATE=${KPX_LAB_STATE:-/run/${PREFIX}lab}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PODSERVER=${KPX_PODSERVER:-$REPO/build/tools/podserver/kpx-podserver}

NS_CLIENT=${PREFIX}client
NS_NODE=${PREFIX}node
CLIENT_IP=10.244.0.2
NODE_IP=10.244.0.1
POD_GW=169.254.1.1
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/12
HTTP_PORT=5000
ECHO_PORT=5001
SINK_PORT=5002
WAIT_S=5  # bound on every readiness / exit wait

log() { echo "lab.sh: $*" >&2; }
die() { log "$*"; exit 1; }

pod_ns() { echo "${PREFIX}pod$1"; }
pod_ip() {
  case $1 in
    1) echo 10.244.1.2 ;;
    2) echo 10.244.2.2 ;;
    3) echo 10.244.3.2 ;;
    4) echo 10.244.3.3 ;;  # pods 3 and 4 share node a4-worker3's /24
    *) echo "10.244.$1.2" ;;
  esac
}

# Namespaces of this lab that exist now (exact names, never a broad prefix).
lab_namespaces() {
  ip netns list 2>/dev/null | awk '{print $1}' |
    grep -E "^${PREFIX}(client|node|pod[0-9]+)\$" | sort -V || true
}

# Pod count of the lab in $STATE (falls back to the environment).
lab_pods() {
  if [[ -f $STATE/pods ]]; then cat "$STATE/pods"; else echo "${KPX_LAB_PODS:-4}"; fi
}

require_root() { [[ $(id -u) -eq 0 ]] || die "needs root (network namespaces)"; }

check_pod_index() {
  if ! [[ ${1:-} =~ ^[0-9]+$ ]] || ((10#$1 < 1 || 10#$1 > $(lab_pods))); then
    die "pod index '${1:-}' not in 1..$(lab_pods)"
  fi
}

# Process start time (clock ticks since boot), "" when gone or a zombie. A PID
# file holds "PID STARTTIME" so a recycled PID is never signalled.
proc_start() {
  local stat f
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }  # fields after "(comm) "; comm may contain spaces
  read -r -a f <<<"$stat"
  [[ ${f[0]} == Z ]] && return 0
  echo "${f[19]}"
}

pid_alive() {  # pidfile
  local pid start
  [[ -f $1 ]] || return 1
  read -r pid start <"$1" || return 1
  [[ -n $pid && -n $start && $(proc_start "$pid") == "$start" ]]
}

stop_pidfile() {  # pidfile: TERM, wait (bounded), then KILL
  local pid start i
  [[ -f $1 ]] || return 0
  read -r pid start <"$1" || true
  if [[ -n ${pid:-} && -n ${start:-} && $(proc_start "$pid") == "$start" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < WAIT_S * 20; i++)); do
      [[ $(proc_start "$pid") == "$start" ]] || break
      sleep 0.05
    done
    if [[ $(proc_start "$pid") == "$start" ]]; then
      log "pid $pid did not exit on SIGTERM within ${WAIT_S}s; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$1"
}

port_listening() {  # ns port
  [[ -n $(ip netns exec "$1" ss -Hltn "sport = :$2" 2>/dev/null) ]]
}

start_pod_server() {  # index
  local i=$1 ns pidfile pid n
  ns=$(pod_ns "$i")
  pidfile=$STATE/pod$i.pid
  pid_alive "$pidfile" && die "pod$i server already running (pid $(cut -d' ' -f1 "$pidfile"))"
  # The child records its own PID and start time, then execs (bash -> ip
  # netns exec -> kpx-podserver keep both), so even a SIGKILLed `up` leaves
  # no unrecorded server. Lock fd 9 is closed so a server never holds the lock.
  rm -f "$pidfile"
  (
    me=$BASHPID  # here, not inside $(...), which is a process of its own
    echo "$me $(proc_start "$me")" >"$pidfile.tmp" && mv "$pidfile.tmp" "$pidfile"
    # Descriptors the caller leaked (a test's pipe, the lab lock) must not
    # live on in a server: a caller reading that pipe would wait forever.
    for fd in /proc/"$me"/fd/*; do
      fd=${fd##*/}
      if ((fd > 2)); then eval "exec $fd>&-"; fi
    done
    exec ip netns exec "$ns" "$PODSERVER" --name "pod$i" \
      --listen "0.0.0.0:$HTTP_PORT" --echo "0.0.0.0:$ECHO_PORT" --sink "0.0.0.0:$SINK_PORT" \
      --health-fail-file "$STATE/pod$i.unhealthy"
  ) </dev/null >>"$STATE/pod$i.log" 2>&1 9>&- &
  pid=$!
  for ((n = 0; n < WAIT_S * 20; n++)); do
    [[ -f $pidfile ]] && break
    sleep 0.01
  done
  for ((n = 0; n < WAIT_S * 20; n++)); do
    if port_listening "$ns" $HTTP_PORT && port_listening "$ns" $ECHO_PORT &&
      port_listening "$ns" $SINK_PORT; then
      [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$(readlink -f "$PODSERVER")" ]] ||
        die "pod$i: pid $pid is not $PODSERVER"
      return 0
    fi
    pid_alive "$pidfile" ||
      die "pod$i server exited; $STATE/pod$i.log says: $(tail -n 3 "$STATE/pod$i.log" 2>/dev/null)"
    sleep 0.05
  done
  die "pod$i server not listening after ${WAIT_S}s; see $STATE/pod$i.log"
}

nsysctl() {  # ns key=value...
  local ns=$1
  shift
  ip netns exec "$ns" sysctl -qw "$@" >/dev/null
}

# A fresh namespace: recorded before creation (so `down` finds it after a
# kill), loopback up, IPv4 only (no IPv6 DAD/RS noise on the veths).
make_ns() {
  echo "$1" >>"$STATE/namespaces"
  ip netns add "$1"
  nsysctl "$1" net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip -n "$1" link set lo up
}

# Checks that must pass before `up` creates anything (a failure after this
# point tears the half-built lab down; before it, an existing lab is kept).
up_precheck() {
  local pods=${KPX_LAB_PODS:-4}
  if ! [[ $pods =~ ^[0-9]+$ ]] || ((10#$pods < 1 || 10#$pods > 250)); then
    die "KPX_LAB_PODS must be 1..250"
  fi
  [[ -x $PODSERVER ]] || die "no pod server at $PODSERVER (build target kpx-podserver, or set KPX_PODSERVER)"
  if [[ -n $(lab_namespaces) || -e $STATE ]]; then
    die "lab already (partly) up: $(lab_namespaces | tr '\n' ' ')-- run 'lab.sh down' first"
  fi
}

do_up() {
  local pods=$((10#${KPX_LAB_PODS:-4})) i ns ip
  mkdir -p "$STATE"
  echo "$pods" >"$STATE/pods"
  readlink -f "$PODSERVER" >"$STATE/podserver"  # pod-start reuses this binary
  make_ns "$NS_CLIENT"
  make_ns "$NS_NODE"
  for ((i = 1; i <= pods; i++)); do make_ns "$(pod_ns "$i")"; done

  # Node: a router between the client and the pods, nothing beyond them.
  nsysctl "$NS_NODE" net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
    net.ipv4.conf.default.rp_filter=0
  ip -n "$NS_NODE" addr add "$POD_GW/32" dev lo

  # Client: plays a pod on this node (source inside the cluster CIDR).
  ip -n "$NS_CLIENT" link add eth0 type veth peer name cli0 netns "$NS_NODE"
  ip -n "$NS_CLIENT" addr add "$CLIENT_IP/24" dev eth0
  ip -n "$NS_CLIENT" link set eth0 up
  ip -n "$NS_CLIENT" route add "$CLUSTER_CIDR" via "$NODE_IP"
  ip -n "$NS_CLIENT" route add "$SERVICE_CIDR" via "$NODE_IP"
  nsysctl "$NS_CLIENT" net.ipv4.ip_local_port_range="1024 65535" net.ipv4.tcp_tw_reuse=1
  ip -n "$NS_NODE" addr add "$NODE_IP/24" dev cli0
  ip -n "$NS_NODE" link set cli0 up

  # Pods: a /32 each; pods 3 and 4 share a /24, so no subnet routes, only
  # per-pod host routes on the node and a link-local gateway in the pod.
  for ((i = 1; i <= pods; i++)); do
    ns=$(pod_ns "$i")
    ip=$(pod_ip "$i")
    ip -n "$ns" link add eth0 type veth peer name "pod$i" netns "$NS_NODE"
    ip -n "$ns" addr add "$ip/32" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add "$POD_GW" dev eth0 scope link
    ip -n "$ns" route add default via "$POD_GW" dev eth0
    nsysctl "$ns" net.core.somaxconn=4096
    ip -n "$NS_NODE" link set "pod$i" up
    nsysctl "$NS_NODE" "net.ipv4.conf.pod$i.proxy_arp=1" "net.ipv4.conf.pod$i.rp_filter=0"
    ip -n "$NS_NODE" route add "$ip/32" dev "pod$i" scope link src "$NODE_IP"
  done

  for ((i = 1; i <= pods; i++)); do start_pod_server "$i"; done
  log "up: $NS_CLIENT $NS_NODE $(pod_ns 1)..$(pod_ns "$pods"); state in $STATE"
}

do_down() {
  local f ns left
  for f in "$STATE"/pod*.pid; do
    [[ -e $f ]] && stop_pidfile "$f"
  done
  for ns in $(lab_namespaces); do
    left=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
    [[ -n $left ]] && log "warning: $ns still has processes not started by lab.sh (pids $left); deleting the name anyway"
    ip netns del "$ns" || log "warning: could not delete $ns"
  done
  rm -rf "$STATE"
  [[ -z $(lab_namespaces) ]] || die "namespaces left: $(lab_namespaces | tr '\n' ' ')"
}

do_status() {
  local ns i pods
  if [[ -z $(lab_namespaces) ]]; then
    echo "lab ${PREFIX}*: down"
    return 0
  fi
  pods=$(lab_pods)
  echo "lab ${PREFIX}*: $(lab_namespaces | wc -l) namespaces, state $STATE"
  for ns in $(lab_namespaces); do
    echo "== $ns"
    ip -n "$ns" -br addr show | sed 's/^/  /'
    ip -n "$ns" -4 route show | sed 's/^/  route /'
  done
  echo "== pod servers"
  for ((i = 1; i <= pods; i++)); do
    if pid_alive "$STATE/pod$i.pid"; then
      echo "  pod$i $(pod_ip "$i") pid $(cut -d' ' -f1 "$STATE/pod$i.pid") alive"
    else
      echo "  pod$i $(pod_ip "$i") not running"
    fi
  done
}

do_check() {
  local i pods got bad=0
  pods=$(lab_pods)
  for ((i = 1; i <= pods; i++)); do
    got=$(ip netns exec "$NS_CLIENT" curl -s --max-time 2 "http://$(pod_ip "$i"):$HTTP_PORT/" || true)
    if [[ $got == "pod$i" ]]; then
      echo "pod$i $(pod_ip "$i"): ok"
    else
      echo "pod$i $(pod_ip "$i"): FAILED (got '$got')"
      bad=1
    fi
  done
  return $bad
}

main() {
  local cmd=${1:-}
  [[ -n $cmd ]] || { sed -n '/^# Usage/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
  shift
  case $cmd in
    exec)
      [[ $# -ge 2 ]] || die "usage: lab.sh exec NS CMD..."
      local ns=$1
      shift
      [[ $ns == "$PREFIX"* ]] || ns=$PREFIX$ns
      exec ip netns exec "$ns" "$@"
      ;;
    status) do_status; return ;;
    check) require_root; do_check; return ;;
  esac
  require_root
  # One lab operation at a time (a test and a demo calling up/down together).
  exec 9>"/run/${PREFIX}lab.lock"
  flock -w 60 9 || die "another lab.sh holds /run/${PREFIX}lab.lock"
  case $cmd in
    up)
      up_precheck
      # A failed or interrupted `up` tears down what it made.
      UP_DONE=0
      trap '[[ $UP_DONE == 1 ]] || { log "up failed; tearing down"; do_down || true; }' EXIT
      trap 'exit 1' INT TERM HUP
      do_up
      UP_DONE=1
      ;;
    down) do_down ;;
    pod-stop)
      check_pod_index "${1:-}"
      stop_pidfile "$STATE/pod$((10#$1)).pid"
      ;;
    pod-start)
      check_pod_index "${1:-}"
      [[ -f $STATE/podserver ]] || die "lab is not up"
      PODSERVER=$(cat "$STATE/podserver")
      start_pod_server "$((10#$1))"
      ;;
    pod-health)
      check_pod_index "${1:-}"
      case ${2:-} in
        ok) rm -f "$STATE/pod$((10#$1)).unhealthy" ;;
        fail) touch "$STATE/pod$((10#$1)).unhealthy" ;;
        *) die "usage: lab.sh pod-health I ok|fail" ;;
      esac
      ;;
    *) die "unknown command '$cmd' (up|down|status|check|exec|pod-stop|pod-start|pod-health)" ;;
  esac
}

main "$@"

# bench/ab_hook.sh: a peers.sh project hook that compares several kpxd builds or
# flag sets in ONE peers.sh run (so they share the machine's load with the
# HAProxy runs between them). Each `project` mode of the run takes the next
# line of $KPX_AB_LIST:
#     label|build dir|extra kpxd flags|extra environment (VAR=value ...)
# and the label is appended to $KPXB_OUT/ab-labels.txt in run order, for
# bench/ab_report.py. Example (from the repository root, as root):
#     printf 'base|build-a||\nnew|build-b|--relay=copy|\n' >/tmp/ab.list
#     KPX_AB_LIST=/tmp/ab.list PROJECT_HOOK=$PWD/bench/ab_hook.sh \
#       ../shared/peers/peers.sh haproxy project project haproxy
#     python3 bench/ab_report.py peer-results/<run>
# shellcheck source=bench/peers_hook.sh
source "$(dirname "${BASH_SOURCE[0]}")/peers_hook.sh"

eval "kpx_ab_base_start() $(declare -f project_start | tail -n +2)"

project_start() {
  local n label build flags envs
  n=$(wc -l <"$KPXB_OUT/ab-labels.txt" 2>/dev/null || echo 0)
  IFS='|' read -r label build flags envs < <(sed -n "$((n + 1))p" "${KPX_AB_LIST:?}")
  [[ -n $label ]] || { echo "kpx ab hook: no line $((n + 1)) in $KPX_AB_LIST" >&2; return 1; }
  echo "$label" >>"$KPXB_OUT/ab-labels.txt"
  echo "kpx ab hook: project #$((n + 1)) = $label ($build $flags $envs)" >&2
  KPX_BUILD=$build KPX_KPXD_ARGS=$flags
  local kv rc=0
  for kv in $envs; do export "${kv?}"; done
  kpx_ab_base_start || rc=$?
  for kv in $envs; do unset "${kv%%=*}"; done  # not inherited by the next line's kpxd
  return $rc
}

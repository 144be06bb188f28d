#!/usr/bin/env bash
# Installs every build, test and lab dependency of kpx from Debian's archive.
# Idempotent and quiet: safe to run before every build (tools/test.sh does).
set -euo pipefail

PKGS=(
  # toolchain
  build-essential cmake ninja-build pkg-config clang llvm lld ccache gnuplot-nox
  # BPF: libbpf, skeleton generator, kernel headers for asm/types.h
  libbpf-dev bpftool libelf-dev zlib1g-dev linux-libc-dev
  # libraries
  liburing-dev libabsl-dev libgflags-dev libgoogle-glog-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libyaml-cpp-dev libyaml-dev libjemalloc-dev nlohmann-json3-dev libcli11-dev libcurl4-openssl-dev libcpp-httplib-dev libssl-dev
  # sanitizer / fuzzer runtime for clang
  libclang-rt-14-dev
  # lab + e2e + peers
  iproute2 iputils-ping curl procps python3 psmisc nftables iptables
  haproxy nginx libnginx-mod-stream conntrack wrk iperf3 gnuplot-nox
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup.sh: missing packages (${missing[*]}); run as root to install them" >&2
    exit 1
  fi
  echo "setup.sh: installing ${#missing[@]} packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # haproxy/nginx packages start system services; the lab runs its own instances.
  for svc in haproxy nginx; do
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  done
fi

# bpffs: pinned maps/links live under /sys/fs/bpf/kpx (mount only if absent).
if [[ $(id -u) -eq 0 ]] && ! mountpoint -q /sys/fs/bpf 2>/dev/null; then
  mount -t bpf bpf /sys/fs/bpf || echo "setup.sh: could not mount bpffs (BPF tests will skip)" >&2
fi
echo "setup.sh: dependencies ready"

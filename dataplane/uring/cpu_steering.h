// CpuSteering: sends each new connection of a frontend to the listener of
// the worker pinned to the CPU that handles its SYN (no cross-CPU wake-up
// between the SYN's softirq and the accepting ring). A reuseport group
// indexes its sockets in listen() order, which is worker order here; the
// program returns the index of the worker on this CPU, or a value past the
// end, which makes the kernel fall back to its usual hash.
//
// One eBPF socket-filter program, loaded once and attached to every group
// (SO_ATTACH_REUSEPORT_EBPF), where the kernel allows it; else a classic BPF
// program per group (SO_ATTACH_REUSEPORT_CBPF), which the kernel translates
// and JIT-compiles at every attach: 10k attaches took ~50 ms of CPU here,
// against ~4 ms with the shared program.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "dataplane/xdp/unique_fd.h"

namespace kpx::uring {

class CpuSteering {
 public:
  // `cpus`: worker i runs on cpus[i]. Never fails: without an eBPF program
  // (no CAP_BPF, or the kernel refuses it) Attach uses classic BPF.
  // allow_ebpf false: classic BPF only (tests).
  explicit CpuSteering(std::vector<int> cpus, bool allow_ebpf = true);

  // Attaches the steering program to the reuseport group of `fd` (a
  // listening socket; the whole group shares it).
  absl::Status Attach(int fd) const;

  // Whether the shared eBPF program is in use (else classic BPF per group),
  // and why not when it is not.
  bool shared_program() const { return prog_.valid(); }
  const std::string& fallback_reason() const { return fallback_reason_; }

 private:
  std::vector<int> cpus_;
  xdp::UniqueFd prog_;
  std::string fallback_reason_;
};

}  // namespace kpx::uring

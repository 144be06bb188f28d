// The network namespaces `kpx-bench xdp` works in: a "node" netns where the
// BPF_PROG_TEST_RUN measurements run (its routes give the programs' FIB
// lookups a next hop for backends and clients, as on a node) and, for the
// live-frame test, a "client" netns whose raw AF_PACKET sender feeds frames
// into the node through a veth pair. Removed in the destructor.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kpx::bench {

class XdpLab {
 public:
  // Node netns "kpxbx-<pid>" with lo up, forwarding on, veth be0<->be1 (both
  // in the node netns; be1 is where redirected frames land), 10.0.0.0/8 via
  // a gateway on be0 with a permanent neighbour, and an unreachable route
  // for 10.97.255.253 (frames to it are left to the stack). Client netns
  // "kpxbx-<pid>-c" holding c0, whose peer n0 is in the node netns.
  static absl::StatusOr<std::unique_ptr<XdpLab>> Create();
  ~XdpLab();
  XdpLab(const XdpLab&) = delete;
  XdpLab& operator=(const XdpLab&) = delete;

  // Runs fn with this thread in the node netns, then returns to the
  // original one (BPF_PROG_TEST_RUN uses the caller's netns).
  absl::Status RunInside(const std::function<absl::Status()>& fn);

  int backend_ifindex() const { return be0_; }  // redirect target for NATed frames
  int sink_ifindex() const { return be1_; }     // where those frames are received
  int ingress_ifindex() const { return n0_; }   // where the client's frames arrive

  // Attaches (fd >= 0) or detaches (fd < 0) a native XDP program.
  absl::Status SetXdp(int ifindex, int fd);

  struct Sent {
    uint64_t frames = 0;
    absl::Duration elapsed;
  };
  // Sends `frames` in order (cycling) out of c0 in the client netns with
  // sendmmsg, until `max_frames` went out or `seconds` passed.
  absl::StatusOr<Sent> Send(const std::vector<std::vector<uint8_t>>& frames, uint64_t max_frames, absl::Duration bound);

 private:
  XdpLab() = default;
  std::string node_, client_;
  int be0_ = 0, be1_ = 0, n0_ = 0;
};

}  // namespace kpx::bench

// XdpLab: see xdp_lab.h. Namespaces and devices are made with ip(8) (as
// tools/lab.sh does); everything is named kpxbx-<pid>* and deleted again.
#include "tools/kpx-bench/xdp_lab.h"

#include <arpa/inet.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace kpx::bench {
namespace {

absl::Status Sh(const std::string& cmd) {
  int rc = std::system((cmd + " >/dev/null 2>&1").c_str());
  if (rc != 0) return absl::InternalError(absl::StrCat("xdp lab: `", cmd, "` failed (status ", rc, ")"));
  return absl::OkStatus();
}

// Runs fn in netns `ns` on this thread.
absl::Status InNetns(const std::string& ns, const std::function<absl::Status()>& fn) {
  int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  int target = open(("/run/netns/" + ns).c_str(), O_RDONLY | O_CLOEXEC);
  if (self < 0 || target < 0) {
    if (self >= 0) close(self);
    if (target >= 0) close(target);
    return absl::InternalError(absl::StrCat("xdp lab: opening netns ", ns, ": ", strerror(errno)));
  }
  absl::Status st;
  if (setns(target, CLONE_NEWNET) != 0) {
    st = absl::InternalError(absl::StrCat("xdp lab: setns ", ns, ": ", strerror(errno)));
  } else {
    st = fn();
    if (setns(self, CLONE_NEWNET) != 0) {
      // Cannot happen with the fd we opened; carrying on in the wrong netns would be worse.
      std::abort();
    }
  }
  close(self);
  close(target);
  return st;
}

}  // namespace

absl::StatusOr<std::unique_ptr<XdpLab>> XdpLab::Create() {
  std::unique_ptr<XdpLab> lab(new XdpLab());
  lab->node_ = absl::StrCat("kpxbx-", getpid());
  lab->client_ = lab->node_ + "-c";
  const std::string n = "ip -n " + lab->node_ + " ";
  const std::string c = "ip -n " + lab->client_ + " ";
  for (const std::string& cmd : {
           "ip netns add " + lab->node_,
           "ip netns add " + lab->client_,
           n + "link set lo up",
           "ip netns exec " + lab->node_ + " sysctl -qw net.ipv4.ip_forward=1",
           n + "link add be0 type veth peer name be1",
           n + "addr add 10.255.0.1/30 dev be0",
           n + "link set be0 up",
           n + "link set be1 up",
           n + "neigh add 10.255.0.2 lladdr 02:00:00:00:be:02 dev be0 nud permanent",
           n + "route add 10.0.0.0/8 via 10.255.0.2 dev be0",
           n + "route add unreachable 10.97.255.253/32",
           n + "link add n0 type veth peer name c0 netns " + lab->client_,
           n + "link set n0 up",
           c + "link set lo up",
           c + "link set c0 up",
       }) {
    if (absl::Status st = Sh(cmd); !st.ok()) return st;
  }
  absl::Status st = lab->RunInside([&]() -> absl::Status {
    lab->be0_ = static_cast<int>(if_nametoindex("be0"));
    lab->be1_ = static_cast<int>(if_nametoindex("be1"));
    lab->n0_ = static_cast<int>(if_nametoindex("n0"));
    if (!lab->be0_ || !lab->be1_ || !lab->n0_) return absl::InternalError("xdp lab: devices missing");
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  return lab;
}

XdpLab::~XdpLab() {
  // Deleting the netns removes the veths and detaches their XDP programs.
  for (const std::string& ns : {client_, node_}) {
    if (!ns.empty()) (void)Sh("ip netns del " + ns);
  }
}

absl::Status XdpLab::RunInside(const std::function<absl::Status()>& fn) { return InNetns(node_, fn); }

absl::Status XdpLab::SetXdp(int ifindex, int fd) {
  return RunInside([&]() -> absl::Status {
    int err = fd >= 0 ? bpf_xdp_attach(ifindex, fd, XDP_FLAGS_DRV_MODE, nullptr)
                      : bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, nullptr);
    if (err != 0)
      return absl::InternalError(absl::StrCat("xdp lab: XDP attach on ifindex ", ifindex, ": ", strerror(-err)));
    return absl::OkStatus();
  });
}

absl::StatusOr<XdpLab::Sent> XdpLab::Send(const std::vector<std::vector<uint8_t>>& frames, uint64_t max_frames,
                                          absl::Duration bound) {
  Sent sent;
  if (frames.empty()) return sent;
  absl::Status st = InNetns(client_, [&]() -> absl::Status {
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);  // protocol 0: send only
    if (fd < 0) return absl::InternalError(absl::StrCat("xdp lab: AF_PACKET socket: ", strerror(errno)));
    int one = 1;
    setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
    sockaddr_ll addr{};
    addr.sll_family = AF_PACKET;
    addr.sll_ifindex = static_cast<int>(if_nametoindex("c0"));
    addr.sll_halen = ETH_ALEN;
    constexpr int kBatch = 64;
    std::vector<mmsghdr> msgs(kBatch);
    std::vector<iovec> iovs(kBatch);
    absl::Status out;
    const absl::Time start = absl::Now();
    const absl::Time deadline = start + bound;
    size_t next = 0;
    while (sent.frames < max_frames) {
      int n = static_cast<int>(std::min<uint64_t>(kBatch, max_frames - sent.frames));
      for (int i = 0; i < n; ++i) {
        const auto& f = frames[(next + i) % frames.size()];
        iovs[i] = {const_cast<uint8_t*>(f.data()), f.size()};
        msgs[i] = {};
        msgs[i].msg_hdr.msg_name = &addr;
        msgs[i].msg_hdr.msg_namelen = sizeof(addr);
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
      }
      int rc = sendmmsg(fd, msgs.data(), n, 0);
      if (rc < 0) {
        if (errno == ENOBUFS || errno == EAGAIN || errno == EINTR) continue;
        out = absl::InternalError(absl::StrCat("xdp lab: sendmmsg: ", strerror(errno)));
        break;
      }
      sent.frames += rc;
      next += rc;
      if (absl::Now() > deadline) break;
    }
    sent.elapsed = absl::Now() - start;
    close(fd);
    return out;
  });
  if (!st.ok()) return st;
  return sent;
}

}  // namespace kpx::bench

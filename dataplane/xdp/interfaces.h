// The network interfaces of the current namespace as the XDP dataplane needs
// them: name, ifindex, flags, IPv4 addresses (for the default XDP interface
// list and the node addresses NodePorts answer on).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "controller/base/ipv4.h"

namespace kpx::xdp {

struct NetInterface {
  std::string name;
  int ifindex = 0;
  bool loopback = false;
  bool up = false;
  std::vector<Ipv4> addrs;  // IPv4 only
};

// Every interface of the calling thread's network namespace, by ifindex.
absl::StatusOr<std::vector<NetInterface>> ListInterfaces();

// The interface named `name`, or NotFound naming what exists.
absl::StatusOr<NetInterface> FindInterface(const std::vector<NetInterface>& all, const std::string& name);

// An IPv4 prefix ("10.244.0.0/16").
struct Ipv4Cidr {
  Ipv4 addr;
  int prefix = 0;
  bool empty() const { return prefix == 0 && addr.IsUnspecified(); }
  // The prefix's netmask in host byte order (0 for /0, all ones for /32).
  static uint32_t HostMask(int prefix) {
    return prefix <= 0 ? 0u : prefix >= 32 ? ~0u : ~0u << (32 - prefix);
  }
  bool Contains(Ipv4 ip) const {
    return (ip.host() & HostMask(prefix)) == (addr.host() & HostMask(prefix));
  }
};
absl::StatusOr<Ipv4Cidr> ParseIpv4Cidr(const std::string& text);

// Masquerade source ports, inclusive ("61000-65535", host order). Both ends
// must be 1024..65535 and min <= max. The node's own sockets take ports from
// ip_local_port_range: keep the two apart.
struct PortRange {
  uint16_t min = 0;
  uint16_t max = 0;
};
absl::StatusOr<PortRange> ParsePortRange(const std::string& text);

}  // namespace kpx::xdp

// Interface listing with if_nameindex(3) + getifaddrs(3): enough for a list
// read once at startup (no netlink subscription here).
#include "dataplane/xdp/interfaces.h"

#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kpx::xdp {

absl::StatusOr<std::vector<NetInterface>> ListInterfaces() {
  std::vector<NetInterface> out;
  struct if_nameindex* names = if_nameindex();
  if (names == nullptr) return absl::InternalError(absl::StrCat("if_nameindex: ", strerror(errno)));
  for (struct if_nameindex* n = names; n->if_index != 0 && n->if_name != nullptr; ++n) {
    NetInterface i;
    i.name = n->if_name;
    i.ifindex = static_cast<int>(n->if_index);
    out.push_back(std::move(i));
  }
  if_freenameindex(names);
  ifaddrs* addrs = nullptr;
  if (getifaddrs(&addrs) != 0) return absl::InternalError(absl::StrCat("getifaddrs: ", strerror(errno)));
  for (ifaddrs* a = addrs; a != nullptr; a = a->ifa_next) {
    auto it = std::find_if(out.begin(), out.end(), [&](const NetInterface& i) { return i.name == a->ifa_name; });
    if (it == out.end()) continue;
    it->loopback = (a->ifa_flags & IFF_LOOPBACK) != 0;
    it->up = (a->ifa_flags & IFF_UP) != 0;
    if (a->ifa_addr != nullptr && a->ifa_addr->sa_family == AF_INET) {
      Ipv4 ip = Ipv4::FromBe(reinterpret_cast<const sockaddr_in*>(a->ifa_addr)->sin_addr.s_addr);
      if (std::find(it->addrs.begin(), it->addrs.end(), ip) == it->addrs.end()) it->addrs.push_back(ip);
    }
  }
  freeifaddrs(addrs);
  std::sort(out.begin(), out.end(), [](const NetInterface& a, const NetInterface& b) { return a.ifindex < b.ifindex; });
  return out;
}

absl::StatusOr<NetInterface> FindInterface(const std::vector<NetInterface>& all, const std::string& name) {
  for (const NetInterface& i : all) {
    if (i.name == name) return i;
  }
  std::vector<std::string> names;
  for (const NetInterface& i : all) names.push_back(i.name);
  return absl::NotFoundError(
      absl::StrCat("no interface named \"", name, "\" in this network namespace (have: ", absl::StrJoin(names, ", "), ")"));
}

absl::StatusOr<Ipv4Cidr> ParseIpv4Cidr(const std::string& text) {
  auto bad = [&] { return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not an IPv4 CIDR like 10.244.0.0/16")); };
  size_t slash = text.find('/');
  if (slash == std::string::npos) return bad();
  std::optional<Ipv4> ip = Ipv4::Parse(std::string_view(text).substr(0, slash));
  int prefix = 0;
  if (!ip.has_value() || !absl::SimpleAtoi(absl::string_view(text.data() + slash + 1, text.size() - slash - 1), &prefix) ||
      prefix < 0 || prefix > 32) {
    return bad();
  }
  return Ipv4Cidr{Ipv4::FromHost(ip->host() & Ipv4Cidr::HostMask(prefix)), prefix};
}

absl::StatusOr<PortRange> ParsePortRange(const std::string& text) {
  size_t dash = text.find('-');
  int lo = 0, hi = 0;
  if (dash == std::string::npos || !absl::SimpleAtoi(absl::string_view(text).substr(0, dash), &lo) ||
      !absl::SimpleAtoi(absl::string_view(text).substr(dash + 1), &hi)) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not a port range like 61000-65535"));
  }
  if (lo < 1024 || hi > 65535 || lo > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\": ports must be 1024-65535 with the first <= the last"));
  }
  return PortRange{static_cast<uint16_t>(lo), static_cast<uint16_t>(hi)};
}

}  // namespace kpx::xdp

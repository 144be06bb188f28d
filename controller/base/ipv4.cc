// Parsing and printing of IPv4 addresses.
#include "controller/base/ipv4.h"

#include <arpa/inet.h>

namespace kpx {

Ipv4 Ipv4::FromHost(uint32_t host) { return FromBe(htonl(host)); }

uint32_t Ipv4::host() const { return ntohl(be_); }

std::optional<Ipv4> Ipv4::Parse(std::string_view text) {
  if (text.empty() || text.size() > 15) return std::nullopt;
  char buf[16];
  text.copy(buf, text.size());
  buf[text.size()] = '\0';
  in_addr addr{};
  // inet_pton accepts only the strict dotted-quad form (no octal, no shorthand).
  if (inet_pton(AF_INET, buf, &addr) != 1) return std::nullopt;
  return FromBe(addr.s_addr);
}

std::string Ipv4::ToString() const {
  char buf[INET_ADDRSTRLEN];
  in_addr addr{be_};
  inet_ntop(AF_INET, &addr, buf, sizeof(buf));
  return buf;
}

bool LooksLikeIpv6(std::string_view text) {
  return text.find(':') != std::string_view::npos;
}

}  // namespace kpx

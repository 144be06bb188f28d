// A compact IPv4 address (network byte order inside), the unit every rule,
// map key and socket address in kpx is built from.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/hash/hash.h"

namespace kpx {

class Ipv4 {
 public:
  constexpr Ipv4() = default;
  static constexpr Ipv4 FromBe(uint32_t be) { Ipv4 a; a.be_ = be; return a; }
  static Ipv4 FromHost(uint32_t host);
  // Strict dotted quad ("10.0.0.1"); nullopt for anything else, IPv6 included.
  static std::optional<Ipv4> Parse(std::string_view text);

  constexpr uint32_t be() const { return be_; }
  uint32_t host() const;
  constexpr bool IsUnspecified() const { return be_ == 0; }
  std::string ToString() const;

  friend constexpr bool operator==(Ipv4 a, Ipv4 b) { return a.be_ == b.be_; }
  friend bool operator<(Ipv4 a, Ipv4 b) { return a.host() < b.host(); }
  template <typename H>
  friend H AbslHashValue(H h, Ipv4 a) { return H::combine(std::move(h), a.be_); }

 private:
  uint32_t be_ = 0;
};

// True when `text` looks like an IPv6 literal (used to skip the other family
// without calling it an error, as kube-proxy's per-family proxier does).
bool LooksLikeIpv6(std::string_view text);

}  // namespace kpx

// Maglev table population. The hashes are fixed functions of the backend key
// (no per-process seed, unlike absl::Hash): changing them changes every table
// on upgrade, which conntrack absorbs but affinity-less new flows would feel.
#include "dataplane/xdp/maglev.h"

#include <algorithm>
#include <array>
#include <numeric>

#include "absl/base/macros.h"

namespace kpx::xdp {
namespace {

// Primes just below powers of two: each step roughly doubles the table.
constexpr std::array<uint32_t, 9> kSizes = {251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521};
constexpr uint32_t kMinSize = 251;
constexpr uint32_t kSlotsPerBackend = 100;
// An existing table is kept down to this many slots per backend (share
// within ~2 % of even) before it grows: growing reshuffles every flow.
constexpr uint32_t kKeepSlotsPerBackend = 50;

// SplitMix64's finalizer: a bijective 64-bit mixer with good avalanche.
uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// Two independent hashes of one key (different odd constants mixed in).
uint64_t Hash1(uint64_t key) { return Mix64(key ^ 0x6b70782d6d676c31ULL); }  // "kpx-mgl1"
uint64_t Hash2(uint64_t key) { return Mix64((key + 0x9e3779b97f4a7c15ULL) ^ 0x6b70782d6d676c32ULL); }

uint32_t LargestPrimeAtMost(uint32_t n) {
  for (uint32_t p = n; p >= 2; --p) {
    if (IsPrime(p)) return p;
  }
  return 1;
}

}  // namespace

bool IsPrime(uint32_t n) {
  if (n < 2) return false;
  if (n % 2 == 0) return n == 2;
  for (uint32_t d = 3; static_cast<uint64_t>(d) * d <= n; d += 2) {
    if (n % d == 0) return false;
  }
  return true;
}

uint64_t MaglevKey(Ipv4 ip, uint16_t port) {
  return (static_cast<uint64_t>(ip.host()) << 16) | port;
}

std::vector<uint32_t> BuildMaglevTable(absl::Span<const MaglevBackend> backends, uint32_t m) {
  if (backends.empty() || m == 0) return {};
  // Round-robin order decides ties, so fix it: sort by key, then id.
  std::vector<MaglevBackend> sorted(backends.begin(), backends.end());
  std::sort(sorted.begin(), sorted.end(), [](const MaglevBackend& a, const MaglevBackend& b) {
    return a.key != b.key ? a.key < b.key : a.id < b.id;
  });
  const size_t n = sorted.size();
  // Positions and skips are < m, so stepping is an add and a conditional
  // subtract: the populate loop probes ~M ln M times (the last backends
  // search long for a free slot), and a 64-bit modulo per probe was most of
  // a 10k-Service cold start's table building.
  std::vector<uint32_t> next(n);  // current position in each backend's permutation
  std::vector<uint32_t> skip(n);
  for (size_t i = 0; i < n; ++i) {
    next[i] = static_cast<uint32_t>(Hash1(sorted[i].key) % m);
    uint64_t sk = m == 1 ? 1 : Hash2(sorted[i].key) % (m - 1) + 1;
    // For prime M every skip in [1, M-1] is coprime; for others, make it so,
    // or the permutation would revisit slots forever.
    while (std::gcd(sk, static_cast<uint64_t>(m)) != 1) sk = sk % m + 1;
    skip[i] = static_cast<uint32_t>(sk % m);
  }
  std::vector<uint32_t> table(m);
  std::vector<uint8_t> filled(m, 0);  // not vector<bool>: a byte load per probe
  auto step = [m](uint32_t c, uint32_t s) {
    const uint64_t d = uint64_t{c} + s;
    return static_cast<uint32_t>(d >= m ? d - m : d);
  };
  uint32_t count = 0;
  // Each pass gives every backend its next preferred free slot. A backend's
  // permutation visits all M slots, so each inner search ends.
  while (true) {
    for (size_t i = 0; i < n; ++i) {
      uint32_t c = next[i];
      while (filled[c]) c = step(c, skip[i]);
      filled[c] = 1;
      table[c] = sorted[i].id;
      next[i] = step(c, skip[i]);
      if (++count == m) return table;
    }
  }
}

std::vector<uint32_t> BuildMaglevTable(absl::Span<const uint32_t> backend_ids, uint32_t m) {
  std::vector<MaglevBackend> backends;
  backends.reserve(backend_ids.size());
  for (uint32_t id : backend_ids) backends.push_back({id, id});
  return BuildMaglevTable(absl::MakeConstSpan(backends), m);
}

uint32_t ChooseMaglevSize(size_t backends, uint32_t max_m) {
  if (backends == 0) return 0;
  const uint64_t want = std::max<uint64_t>(kMinSize, static_cast<uint64_t>(backends) * kSlotsPerBackend);
  uint32_t size = kSizes.back();
  for (uint32_t p : kSizes) {
    if (p >= want) {
      size = p;
      break;
    }
  }
  if (size > max_m) size = LargestPrimeAtMost(max_m);
  return size;
}

uint32_t ChooseMaglevSizeKeeping(size_t backends, uint32_t current_m, uint32_t max_m) {
  const uint32_t chosen = ChooseMaglevSize(backends, max_m);
  if (chosen == 0 || current_m == 0) return chosen;
  const bool big_enough = current_m >= chosen ||
                          static_cast<uint64_t>(current_m) >= static_cast<uint64_t>(backends) * kKeepSlotsPerBackend;
  if (big_enough && current_m <= max_m && static_cast<uint64_t>(current_m) <= 4ull * chosen) {
    return current_m;
  }
  return chosen;
}

}  // namespace kpx::xdp

// Maglev table properties the eBPF dataplane relies on: full tables, even
// shares, minimal disruption on backend changes, determinism, size choice.
#include "dataplane/xdp/maglev.h"

#include <algorithm>
#include <map>
#include <numeric>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kpx::xdp {
namespace {

std::vector<uint32_t> Ids(uint32_t first, uint32_t count) {
  std::vector<uint32_t> ids(count);
  std::iota(ids.begin(), ids.end(), first);
  return ids;
}

// Backends keyed by address, as the dataplane builds them.
std::vector<MaglevBackend> Addrs(uint32_t count) {
  std::vector<MaglevBackend> out;
  for (uint32_t i = 0; i < count; ++i) {
    Ipv4 ip = Ipv4::FromHost(0x0a000000u + 256 * i + 7);  // 10.0.i.7
    out.push_back({1000 + i, MaglevKey(ip, 8080)});
  }
  return out;
}

size_t Moved(const std::vector<uint32_t>& a, const std::vector<uint32_t>& b) {
  size_t moved = 0;
  for (size_t i = 0; i < a.size(); ++i) moved += a[i] != b[i];
  return moved;
}

TEST(IsPrime, SmallAndListed) {
  EXPECT_FALSE(IsPrime(0));
  EXPECT_FALSE(IsPrime(1));
  EXPECT_TRUE(IsPrime(2));
  EXPECT_FALSE(IsPrime(16383));
  for (uint32_t p : {251u, 509u, 1021u, 2039u, 4093u, 8191u, 16381u, 32749u, 65521u}) {
    EXPECT_TRUE(IsPrime(p)) << p;
  }
}

TEST(BuildMaglevTable, EmptyInputOrSizeGivesNoTable) {
  EXPECT_TRUE(BuildMaglevTable(absl::Span<const uint32_t>(), 251).empty());
  std::vector<uint32_t> ids = {1, 2};
  EXPECT_TRUE(BuildMaglevTable(ids, 0).empty());
}

TEST(BuildMaglevTable, EverySlotFilledWithAGivenBackend) {
  for (uint32_t n : {1u, 2u, 3u, 7u, 50u}) {
    std::vector<uint32_t> ids = Ids(1, n);
    uint32_t m = ChooseMaglevSize(n, 65521);
    std::vector<uint32_t> table = BuildMaglevTable(ids, m);
    ASSERT_EQ(table.size(), m);
    for (uint32_t slot : table) ASSERT_TRUE(slot >= 1 && slot <= n) << slot;
  }
}

TEST(BuildMaglevTable, NonPrimeSizeStillFull) {
  std::vector<uint32_t> ids = {5, 6, 7};
  std::vector<uint32_t> table = BuildMaglevTable(ids, 1000);
  ASSERT_EQ(table.size(), 1000u);
  std::map<uint32_t, int> count;
  for (uint32_t id : table) ++count[id];
  EXPECT_EQ(count.size(), 3u);
  for (auto [id, c] : count) EXPECT_NEAR(c, 333, 1) << id;
}

TEST(BuildMaglevTable, SharesWithinOnePercentOfEven) {
  for (uint32_t n : {1u, 2u, 3u, 5u, 10u, 37u, 100u, 163u}) {
    uint32_t m = ChooseMaglevSize(n, 65521);
    ASSERT_GE(m, 100 * n);
    std::vector<uint32_t> table = BuildMaglevTable(Addrs(n), m);
    std::map<uint32_t, int> count;
    for (uint32_t id : table) ++count[id];
    ASSERT_EQ(count.size(), n);
    const double even = static_cast<double>(m) / n;
    for (auto [id, c] : count) EXPECT_LE(std::abs(c - even), 0.01 * even) << "n=" << n << " id=" << id;
  }
}

// Maglev is not minimally disruptive: a removal shifts later picks of other
// backends too. Measured over N = 2..200 at the sizes ChooseMaglevSize gives
// (M >= 100 N), the extra beyond the victim's 1/N share is at most 2.9 % of
// the slots (1/N + 1 % would need M of about 1000 N). Conntrack keeps
// established flows either way; this bounds what affinity-less new flows of
// an unchanged client see.
constexpr double kMaxExtraDisruption = 0.03;

TEST(BuildMaglevTable, RemovingOneBackendMovesAboutOneNth) {
  for (uint32_t n : {2u, 3u, 5u, 10u, 20u, 50u, 100u}) {
    uint32_t m = ChooseMaglevSize(n, 65521);
    std::vector<MaglevBackend> all = Addrs(n);
    std::vector<uint32_t> before = BuildMaglevTable(all, m);
    for (uint32_t victim : {0u, n / 2, n - 1}) {
      std::vector<MaglevBackend> fewer = all;
      fewer.erase(fewer.begin() + victim);
      std::vector<uint32_t> after = BuildMaglevTable(fewer, m);
      const double moved = static_cast<double>(Moved(before, after)) / m;
      EXPECT_LE(moved, 1.0 / n + kMaxExtraDisruption) << "n=" << n << " victim=" << victim;
      // The victim's slots must all move; nobody keeps a removed backend.
      EXPECT_EQ(std::count(after.begin(), after.end(), all[victim].id), 0);
    }
  }
}

TEST(BuildMaglevTable, AddingOneBackendMovesAboutOneNth) {
  for (uint32_t n : {2u, 3u, 5u, 10u, 20u, 50u, 99u}) {
    uint32_t m = ChooseMaglevSize(n + 1, 65521);  // big enough for both sets
    std::vector<MaglevBackend> all = Addrs(n + 1);
    std::vector<MaglevBackend> fewer(all.begin(), all.end() - 1);
    const double moved =
        static_cast<double>(Moved(BuildMaglevTable(fewer, m), BuildMaglevTable(all, m))) / m;
    EXPECT_LE(moved, 1.0 / (n + 1) + kMaxExtraDisruption) << "n=" << n;
    EXPECT_GE(moved, 1.0 / (n + 1) - 0.01) << "n=" << n;  // the newcomer's share moved
  }
}

TEST(BuildMaglevTable, DeterministicAndOrderIndependent) {
  std::vector<MaglevBackend> a = Addrs(17);
  std::vector<MaglevBackend> b(a.rbegin(), a.rend());
  std::vector<uint32_t> t1 = BuildMaglevTable(a, 4093);
  EXPECT_EQ(t1, BuildMaglevTable(a, 4093));
  EXPECT_EQ(t1, BuildMaglevTable(b, 4093));
}

// A golden slice: the table must be identical in every process and release
// (a restarted kpxd compares what it builds with what is pinned). If this
// changes on purpose, every node reshuffles once on upgrade: say so.
constexpr uint32_t kGoldenHead[] = {2, 3, 2, 2, 2, 1, 1, 1, 3, 1, 1, 3, 1, 1, 3, 3};

TEST(BuildMaglevTable, StableAcrossReleases) {
  std::vector<MaglevBackend> backends = {
      {1, MaglevKey(*Ipv4::Parse("10.0.0.1"), 80)},
      {2, MaglevKey(*Ipv4::Parse("10.0.0.2"), 80)},
      {3, MaglevKey(*Ipv4::Parse("10.0.0.3"), 80)},
  };
  std::vector<uint32_t> table = BuildMaglevTable(backends, 251);
  std::vector<uint32_t> head(table.begin(), table.begin() + 16);
  EXPECT_THAT(head, testing::ElementsAreArray(kGoldenHead));
}

// Whole tables, not just a head: FNV-1a of every slot for sizes from a
// single backend to 300, at small and large M, recorded with the
// one-probe-at-a-time populate loop. The populate loop's speed-ups
// (modulo-free stepping, lookahead) must leave every table as it was.
uint64_t Fnv(const std::vector<uint32_t>& t) {
  uint64_t h = 1469598103934665603ULL;
  for (uint32_t v : t) {
    for (int b = 0; b < 4; ++b) {
      h ^= (v >> (8 * b)) & 0xff;
      h *= 1099511628211ULL;
    }
  }
  return h;
}

TEST(BuildMaglevTable, WholeTablesStableAcrossReleases) {
  struct Case {
    uint32_t n, m;
    uint64_t fnv;
  };
  const Case cases[] = {
      {1, 251, 0x55441fca1f4dd566ULL}, {1, 1021, 0xa749db95c2e3f906ULL}, {1, 4093, 0xbdfb491f8a6cb906ULL},
      {1, 65521, 0xf425be2309516146ULL}, {1, 1000, 0x1b19f04d867b2903ULL}, {2, 251, 0x6e0805a7009c25b7ULL},
      {2, 1021, 0xa8a341f8c02e88feULL}, {2, 4093, 0x180b2ce593eb77c6ULL}, {2, 65521, 0xde9a7d6ab59692beULL},
      {2, 1000, 0xa98eb760ff9f6a9bULL}, {3, 251, 0xd2325aec717cfab4ULL}, {3, 1021, 0x9a65ed172c2b035aULL},
      {3, 4093, 0x3169d8a94920d7ceULL}, {3, 65521, 0xba3d01241274565eULL}, {3, 1000, 0x4d4dc67fb0120634ULL},
      {10, 251, 0x3bff00f9c6ba0313ULL}, {10, 1021, 0xc295b8e44f62c2f6ULL}, {10, 4093, 0x53f25bb108b9f70cULL},
      {10, 65521, 0x5799c9d1a2a08d52ULL}, {10, 1000, 0x0867e089580997efULL}, {17, 251, 0x13a56cbf921a0b92ULL},
      {17, 1021, 0x180f2043aba00d76ULL}, {17, 4093, 0x452e4180525e413eULL}, {17, 65521, 0xfadcdee38f74c071ULL},
      {17, 1000, 0x094c19360bbb6b56ULL}, {100, 251, 0xfa8b55551b483cfcULL}, {100, 1021, 0x4e7ab64627121d92ULL},
      {100, 4093, 0x0967ab4708c358e7ULL}, {100, 65521, 0x204061ab8822037eULL}, {100, 1000, 0xb0d185e4164688dbULL},
      {300, 251, 0x14caedf30540c744ULL}, {300, 1021, 0xafe4a1784e2a4f4fULL}, {300, 4093, 0xd542006f9cca4bebULL},
      {300, 65521, 0x3c9f2802acfddb33ULL}, {300, 1000, 0x561e8e334966e3dbULL},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(Fnv(BuildMaglevTable(Addrs(c.n), c.m)), c.fnv) << "n=" << c.n << " m=" << c.m;
  }
}

TEST(BuildMaglevTable, SameAddressesDifferentIdsSameLayout) {
  // Two nodes give the same endpoints different ids: the slot layout (which
  // address owns which slot) must be the same.
  std::vector<MaglevBackend> node_a = Addrs(6);
  std::vector<MaglevBackend> node_b = node_a;
  std::map<uint32_t, uint64_t> key_a, key_b;
  for (size_t i = 0; i < node_b.size(); ++i) {
    node_b[i].id = 500 - static_cast<uint32_t>(i);
    key_a[node_a[i].id] = node_a[i].key;
    key_b[node_b[i].id] = node_b[i].key;
  }
  std::vector<uint32_t> ta = BuildMaglevTable(node_a, 1021);
  std::vector<uint32_t> tb = BuildMaglevTable(node_b, 1021);
  for (size_t i = 0; i < ta.size(); ++i) ASSERT_EQ(key_a[ta[i]], key_b[tb[i]]) << "slot " << i;
}

TEST(ChooseMaglevSize, SmallestListedPrimeAboveHundredPerBackend) {
  EXPECT_EQ(ChooseMaglevSize(0, 16381), 0u);
  EXPECT_EQ(ChooseMaglevSize(1, 16381), 251u);
  EXPECT_EQ(ChooseMaglevSize(2, 16381), 251u);
  EXPECT_EQ(ChooseMaglevSize(3, 16381), 509u);
  EXPECT_EQ(ChooseMaglevSize(10, 16381), 1021u);
  EXPECT_EQ(ChooseMaglevSize(41, 16381), 8191u);
  EXPECT_EQ(ChooseMaglevSize(82, 16381), 16381u);
  EXPECT_EQ(ChooseMaglevSize(1000, 16381), 16381u);  // capped
  EXPECT_EQ(ChooseMaglevSize(1000, 65521), 65521u);
  EXPECT_EQ(ChooseMaglevSize(1000, 10000), 9973u);   // largest prime <= cap
  EXPECT_EQ(ChooseMaglevSize(1, 100), 97u);
}

TEST(ChooseMaglevSizeKeeping, KeepsSizeWhileAdequate) {
  EXPECT_EQ(ChooseMaglevSizeKeeping(3, 0, 16381), 509u);
  EXPECT_EQ(ChooseMaglevSizeKeeping(6, 509, 16381), 509u);    // 84 slots each: keep
  EXPECT_EQ(ChooseMaglevSizeKeeping(10, 509, 16381), 509u);   // 50.9 slots each: keep
  EXPECT_EQ(ChooseMaglevSizeKeeping(11, 509, 16381), 2039u);  // 46 each: too small, grow
  EXPECT_EQ(ChooseMaglevSizeKeeping(11, 1021, 16381), 1021u); // one more than 10: no reshuffle
  EXPECT_EQ(ChooseMaglevSizeKeeping(5, 1021, 16381), 1021u);  // shrinking by one: keep
  EXPECT_EQ(ChooseMaglevSizeKeeping(6, 1021, 16381), 1021u);  // and back: no flip
  EXPECT_EQ(ChooseMaglevSizeKeeping(1, 16381, 16381), 251u);  // far too big: shrink
  EXPECT_EQ(ChooseMaglevSizeKeeping(50, 8191, 4093), 4093u);  // cap lowered: obey
  EXPECT_EQ(ChooseMaglevSizeKeeping(0, 1021, 16381), 0u);
}

}  // namespace
}  // namespace kpx::xdp

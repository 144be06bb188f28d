// Backend choice of the io_uring proxy: algorithms, health filtering,
// retries that skip tried backends, ClientIP affinity with an explicit clock.
#include "dataplane/uring/backend_picker.h"

#include <map>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kpx::uring {
namespace {

using controller::Backend;
using controller::FrontendKey;
using controller::ServiceRule;

Ipv4 Ip(const char* s) { return *Ipv4::Parse(s); }

ServiceRule Rule(std::vector<Backend> backends, uint32_t affinity_s = 0) {
  ServiceRule r;
  r.frontend = FrontendKey{Ip("10.96.0.10"), 80};
  r.backends = std::move(backends);
  r.affinity_timeout_s = affinity_s;
  return r;
}

Backend B(const char* ip, bool healthy = true) {
  Backend b;
  b.ip = Ip(ip);
  b.port = 8080;
  b.healthy = healthy;
  return b;
}

std::shared_ptr<const FrontendConfig> Config(const ServiceRule& rule, LbAlgorithm algo,
                                             const FrontendConfig* previous = nullptr) {
  auto shared = previous != nullptr ? previous->shared
                                    : std::make_shared<FrontendShared>(rule.frontend);
  return BuildFrontendConfig(rule, algo, shared, previous);
}

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);
const Ipv4 kClient = *Ipv4::Parse("192.168.1.7");

TEST(ParseLbAlgorithm, KnownNamesAndErrors) {
  EXPECT_EQ(*ParseLbAlgorithm("random"), LbAlgorithm::kRandom);
  EXPECT_EQ(*ParseLbAlgorithm("round-robin"), LbAlgorithm::kRoundRobin);
  EXPECT_EQ(*ParseLbAlgorithm("least-conn"), LbAlgorithm::kLeastConn);
  absl::StatusOr<LbAlgorithm> bad = ParseLbAlgorithm("roundrobin");
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), testing::HasSubstr("round-robin"));
  for (LbAlgorithm a : {LbAlgorithm::kRandom, LbAlgorithm::kRoundRobin, LbAlgorithm::kLeastConn}) {
    EXPECT_EQ(*ParseLbAlgorithm(LbAlgorithmName(a)), a);
  }
}

TEST(PickBackend, RandomCoversAllAndIsRoughlyUniform) {
  auto cfg = Config(Rule({B("10.0.0.1"), B("10.0.0.2"), B("10.0.0.3"), B("10.0.0.4")}),
                    LbAlgorithm::kRandom);
  Rng rng(42);
  std::map<BackendEntry*, int> hits;
  for (int i = 0; i < 4000; ++i) ++hits[PickBackend(*cfg, kClient, kT0, {}, rng)];
  ASSERT_EQ(hits.size(), 4u);
  for (const auto& [b, n] : hits) {
    EXPECT_GT(n, 800) << b->ip.ToString();
    EXPECT_LT(n, 1200) << b->ip.ToString();
  }
}

TEST(PickBackend, RoundRobinCyclesInOrderAcrossCallers) {
  auto cfg = Config(Rule({B("10.0.0.1"), B("10.0.0.2"), B("10.0.0.3")}), LbAlgorithm::kRoundRobin);
  Rng rng_a(1), rng_b(2);  // two "workers" share the frontend's cursor
  std::vector<std::string> order;
  for (int i = 0; i < 6; ++i) {
    Rng& rng = i % 2 == 0 ? rng_a : rng_b;
    order.push_back(PickBackend(*cfg, kClient, kT0, {}, rng)->ip.ToString());
  }
  EXPECT_THAT(order, testing::ElementsAre("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.1",
                                          "10.0.0.2", "10.0.0.3"));
}

TEST(PickBackend, LeastConnPicksTheMinimum) {
  auto cfg = Config(Rule({B("10.0.0.1"), B("10.0.0.2"), B("10.0.0.3")}), LbAlgorithm::kLeastConn);
  cfg->backends[0]->active = 5;
  cfg->backends[1]->active = 2;
  cfg->backends[2]->active = 7;
  Rng rng(3);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(PickBackend(*cfg, kClient, kT0, {}, rng), cfg->backends[1].get());
  }
  // Simulate the proxy counting its own picks: 7 picks even the load out
  // (3 to the least loaded, then 2 each to the two tied at 5).
  for (int i = 0; i < 7; ++i) PickBackend(*cfg, kClient, kT0, {}, rng)->active++;
  EXPECT_EQ(cfg->backends[0]->active, 7u);
  EXPECT_EQ(cfg->backends[1]->active, 7u);
  EXPECT_EQ(cfg->backends[2]->active, 7u);
}

TEST(PickBackend, LeastConnSpreadsTies) {
  auto cfg = Config(Rule({B("10.0.0.1"), B("10.0.0.2"), B("10.0.0.3")}), LbAlgorithm::kLeastConn);
  Rng rng(4);
  std::set<BackendEntry*> seen;
  for (int i = 0; i < 100; ++i) seen.insert(PickBackend(*cfg, kClient, kT0, {}, rng));
  EXPECT_EQ(seen.size(), 3u);
}

TEST(PickBackend, UnhealthySkippedUnlessAllAreUnhealthy) {
  for (LbAlgorithm algo : {LbAlgorithm::kRandom, LbAlgorithm::kRoundRobin, LbAlgorithm::kLeastConn}) {
    auto cfg = Config(Rule({B("10.0.0.1", false), B("10.0.0.2"), B("10.0.0.3", false)}), algo);
    Rng rng(5);
    for (int i = 0; i < 50; ++i) {
      EXPECT_EQ(PickBackend(*cfg, kClient, kT0, {}, rng)->ip, Ip("10.0.0.2"))
          << LbAlgorithmName(algo);
    }
    auto all_down = Config(Rule({B("10.0.0.1", false), B("10.0.0.2", false)}), algo);
    std::set<BackendEntry*> seen;
    for (int i = 0; i < 50; ++i) seen.insert(PickBackend(*all_down, kClient, kT0, {}, rng));
    EXPECT_EQ(seen.size(), 2u) << "all unhealthy: the list is used as given";
  }
}

TEST(PickBackend, NoBackendsReturnsNull) {
  auto cfg = Config(Rule({}), LbAlgorithm::kRandom);
  Rng rng(6);
  EXPECT_EQ(PickBackend(*cfg, kClient, kT0, {}, rng), nullptr);
}

TEST(PickBackend, RetriesNeverRepeatATriedBackend) {
  for (LbAlgorithm algo : {LbAlgorithm::kRandom, LbAlgorithm::kRoundRobin, LbAlgorithm::kLeastConn}) {
    auto cfg = Config(Rule({B("10.0.0.1"), B("10.0.0.2"), B("10.0.0.3")}), algo);
    Rng rng(7);
    for (int round = 0; round < 30; ++round) {
      std::vector<BackendEntry*> tried;
      for (int attempt = 0; attempt < 3; ++attempt) {
        BackendEntry* b = PickBackend(*cfg, kClient, kT0, tried, rng);
        ASSERT_NE(b, nullptr);
        EXPECT_THAT(tried, testing::Not(testing::Contains(b))) << LbAlgorithmName(algo);
        tried.push_back(b);
      }
      EXPECT_EQ(PickBackend(*cfg, kClient, kT0, tried, rng), nullptr);
    }
  }
}

TEST(PickBackend, AffinityPinsAClientUntilExpiry) {
  auto cfg = Config(Rule({B("10.0.0.1"), B("10.0.0.2"), B("10.0.0.3")}, /*affinity_s=*/10),
                    LbAlgorithm::kRoundRobin);
  Rng rng(8);
  BackendEntry* first = PickBackend(*cfg, kClient, kT0, {}, rng);
  // Round-robin would move on; affinity keeps the client where it was, and
  // each use refreshes the pin.
  absl::Time t = kT0;
  for (int i = 0; i < 5; ++i) {
    t += absl::Seconds(9);
    EXPECT_EQ(PickBackend(*cfg, kClient, t, {}, rng), first);
  }
  // Another client is not pinned to the same one by the first one's pin.
  const Ipv4 other = Ip("192.168.1.8");
  EXPECT_NE(PickBackend(*cfg, other, t, {}, rng), first);
  // After the timeout without use, the pin is gone: the next pick follows
  // round-robin again (cursor is at the backend after `other`'s).
  BackendEntry* after = PickBackend(*cfg, kClient, t + absl::Seconds(11), {}, rng);
  EXPECT_NE(after, first);
}

TEST(PickBackend, AffinityRepicksWhenThePinnedBackendLeftOrFailed) {
  ServiceRule rule = Rule({B("10.0.0.1"), B("10.0.0.2")}, /*affinity_s=*/100);
  auto cfg = Config(rule, LbAlgorithm::kRandom);
  Rng rng(9);
  BackendEntry* first = PickBackend(*cfg, kClient, kT0, {}, rng);
  // A failed connect: the retry goes elsewhere and the client is re-pinned.
  std::vector<BackendEntry*> tried = {first};
  BackendEntry* second = PickBackend(*cfg, kClient, kT0, tried, rng);
  ASSERT_NE(second, first);
  EXPECT_EQ(PickBackend(*cfg, kClient, kT0 + absl::Seconds(1), {}, rng), second);

  // The pinned backend leaves the rule: re-picked among what is left.
  ServiceRule smaller = rule;
  smaller.backends.erase(std::remove_if(smaller.backends.begin(), smaller.backends.end(),
                                        [&](const Backend& b) { return b.ip == second->ip; }),
                         smaller.backends.end());
  auto cfg2 = Config(smaller, LbAlgorithm::kRandom, cfg.get());
  BackendEntry* third = PickBackend(*cfg2, kClient, kT0 + absl::Seconds(2), {}, rng);
  ASSERT_NE(third, nullptr);
  EXPECT_NE(third->ip, second->ip);
}

TEST(PickBackend, AffinityIsSharedBetweenWorkers) {
  auto cfg = Config(Rule({B("10.0.0.1"), B("10.0.0.2"), B("10.0.0.3"), B("10.0.0.4")}, 60),
                    LbAlgorithm::kRandom);
  Rng worker0(10), worker1(11);
  for (int c = 0; c < 20; ++c) {
    Ipv4 client = Ipv4::FromHost(0xc0a80000u + static_cast<uint32_t>(c));
    BackendEntry* a = PickBackend(*cfg, client, kT0, {}, worker0);
    EXPECT_EQ(PickBackend(*cfg, client, kT0 + absl::Seconds(1), {}, worker1), a);
  }
  EXPECT_EQ(cfg->shared->affinity.size(), 20u);
}

TEST(BuildFrontendConfig, ReusesEntriesOfBackendsThatStay) {
  auto cfg1 = Config(Rule({B("10.0.0.1"), B("10.0.0.2")}), LbAlgorithm::kRandom);
  cfg1->backends[1]->total = 17;
  auto cfg2 = Config(Rule({B("10.0.0.2"), B("10.0.0.3")}), LbAlgorithm::kRandom, cfg1.get());
  ASSERT_EQ(cfg2->backends.size(), 2u);
  EXPECT_EQ(cfg2->backends[0], cfg1->backends[1]) << "same entry: counters carry over";
  EXPECT_EQ(cfg2->backends[0]->total, 17u);
  EXPECT_EQ(cfg2->backends[1]->total, 0u);
  EXPECT_EQ(cfg2->shared, cfg1->shared);
  EXPECT_EQ(ntohs(cfg2->backends[1]->addr.sin_port), 8080);
  EXPECT_EQ(cfg2->backends[1]->addr.sin_addr.s_addr, Ip("10.0.0.3").be());
}

}  // namespace
}  // namespace kpx::uring
